"""Runtime and device nodes: the engine driven by trio, libp2p and SQLite; the CLI."""

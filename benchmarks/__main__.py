"""Run a benchmark: ``python -m benchmarks NAME [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any


def _inprocess() -> Callable[[], dict[str, Any]]:
    from benchmarks import inprocess

    return inprocess.run


def _sim() -> Callable[[], dict[str, Any]]:
    from benchmarks import sim

    return sim.run


BENCHMARKS: dict[str, Callable[[], Callable[[], dict[str, Any]]]] = {
    "inprocess": _inprocess,
    "sim": _sim,
    "inspect": lambda: __import__("benchmarks.inspect", fromlist=["run"]).run,
    "network": lambda: __import__("benchmarks.network", fromlist=["run"]).run,
    "relay": lambda: __import__("benchmarks.relay_floor", fromlist=["run"]).run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    result = BENCHMARKS[args.name]()()
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in sorted(result.items()):
            print(f"{key:40} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

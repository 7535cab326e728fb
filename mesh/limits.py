"""Every limit of agentmesh, named, in one place.

Exceeding a limit raises a typed error (see ``mesh.errors`` and
``crdt_state.errors``) and closes the offending session; it never crashes a
node, hangs, or grows memory without bound.
"""

from __future__ import annotations

# --- wire -------------------------------------------------------------------
#: Largest frame (one CBOR message) accepted or sent on a sync session.
MAX_FRAME_BYTES = 4 * 1024 * 1024
#: Longest length prefix accepted before a frame (unsigned LEB128 varint).
MAX_VARINT_BYTES = 4
#: Most entries in one version vector (chains of one document) sent in a hello.
MAX_VECTOR_ENTRIES = 65_536
#: Most documents named in one hello or ack.
MAX_DOCS_PER_FRAME = 1_024

# --- batches and flow control -------------------------------------------------
#: Most envelopes in one ENVELOPES frame.
MAX_ENVELOPES_PER_BATCH = 256
#: Most bytes of envelopes in one ENVELOPES frame (kept below MAX_FRAME_BYTES).
MAX_BATCH_BYTES = 1024 * 1024
#: Most ENVELOPES frames sent to one peer and not yet acknowledged.
MAX_UNACKED_BATCHES = 8
#: A session whose oldest unacknowledged batch is older than this is closed (peer stalled).
ACK_TIMEOUT_MS = 30_000
#: A session that has not received the peer's hello after this long is closed.
HELLO_TIMEOUT_MS = 10_000
#: A session is closed after this many refused envelopes: an honest peer sends none.
MAX_REFUSALS_PER_SESSION = 64
#: Longest error code and message in an ERROR frame (bytes of UTF-8).
MAX_ERROR_CODE_BYTES = 64
MAX_ERROR_MESSAGE_BYTES = 1024
#: Most membership-log entries in one RECORDS frame.
MAX_RECORDS_PER_FRAME = 256

# --- local batching (transactions -> one envelope) -----------------------------
#: Most local transactions folded into one envelope.
MAX_TXNS_PER_ENVELOPE = 512
#: An open local batch is sealed once its update reaches this many bytes.
MAX_ENVELOPE_UPDATE_BYTES = 256 * 1024
#: An open local batch is sealed at most this many milliseconds after its first transaction.
MAX_BATCH_DELAY_MS = 10

# --- envelopes -------------------------------------------------------------------
#: Largest encoded envelope (body + signature) accepted: one envelope fits in one frame.
MAX_ENVELOPE_BYTES = MAX_FRAME_BYTES - 64 * 1024
#: Largest update one local transaction may produce. Past it, the transaction's
#: batch is discarded and the write refused (an envelope cannot be split).
MAX_TRANSACTION_UPDATE_BYTES = MAX_ENVELOPE_BYTES - MAX_ENVELOPE_UPDATE_BYTES - 64 * 1024
#: Most (client, clock) pairs in an envelope's causal context.
MAX_CONTEXT_ENTRIES = 16_384
#: Longest document name.
MAX_DOC_NAME_BYTES = 128

# --- Yjs update decoder ------------------------------------------------------------
#: Most structs (items, GC, skips) the decoder reads from one update.
MAX_UPDATE_STRUCTS = 1_000_000
#: Most client groups in one update's struct section or delete set.
MAX_UPDATE_CLIENTS = 65_536
#: Largest clock or length value accepted in an update (Yjs clocks are 53-bit safe).
MAX_CLOCK = (1 << 53) - 1
#: Deepest nesting of lib0 "any" values (arrays/objects inside arrays/objects).
MAX_ANY_DEPTH = 64
#: Most delete ranges in one update's delete set.
MAX_DELETE_RANGES = 1_000_000

# --- holding envelopes that arrive early --------------------------------------------
#: Most envelopes held (waiting for their chain predecessor, causal context or membership).
MAX_HELD_ENVELOPES = 4_096
#: Most bytes of held envelopes.
MAX_HELD_BYTES = 64 * 1024 * 1024

# --- membership -----------------------------------------------------------------------
#: Largest encoded membership record or log entry.
MAX_RECORD_BYTES = 64 * 1024
#: Longest device name in a certificate.
MAX_NAME_BYTES = 64
#: Default certificate lifetime.
DEFAULT_CERT_TTL_MS = 365 * 24 * 3600 * 1000
#: The runtime renews a certificate this long before it expires (nodes/renewal.py)...
CERT_RENEW_BEFORE_MS = 30 * 24 * 3600 * 1000
#: ...if its device was connected (or joined) within this long; a device gone longer
#: is left to expire, so a lost device nobody revoked does not live forever.
CERT_RENEW_IF_SEEN_WITHIN_MS = 90 * 24 * 3600 * 1000
#: How often the runtime looks for certificates to renew.
CERT_RENEW_CHECK_INTERVAL_MS = 3600 * 1000
#: Most cutoff entries in one revocation or quarantine.
MAX_CUTOFFS = 4_096
#: Largest encoded membership-log entry (a revocation carries up to MAX_CUTOFFS cutoffs).
MAX_LOG_ENTRY_BYTES = 1024 * 1024

# --- reconnecting ---------------------------------------------------------------------
#: Device reconnect backoff: full jitter, uniform in [0, min(CAP, BASE * 2**attempt)].
RECONNECT_BACKOFF_BASE_MS = 200
RECONNECT_BACKOFF_CAP_MS = 30_000
#: Longest wait to dial the runtime, open the sync stream, or read its first hello.
DIAL_TIMEOUT_MS = 15_000

# --- time -----------------------------------------------------------------------------
#: Remote HLC timestamps are clamped to at most this far ahead of the local clock.
MAX_HLC_DRIFT_MS = 60_000

# --- invites (pairing) --------------------------------------------------------------------
#: Default invite lifetime.
DEFAULT_INVITE_TTL_MS = 10 * 60 * 1000
#: Bytes of secret in an invite (>= 128 bits).
INVITE_SECRET_BYTES = 16

# --- inbound connections (libp2p listener; see docs/NETWORK.md) ----------------------------
#: Most inbound connections from one address still in their handshake (TCP accepted, Noise
#: and yamux not finished). More are closed at accept. IPv6 addresses count per /64.
MAX_PENDING_HANDSHAKES_PER_IP = 8
#: Most inbound connections in their handshake from all addresses together.
MAX_PENDING_HANDSHAKES = 128
#: Most open inbound connections (in handshake or established) from one address.
MAX_CONNECTIONS_PER_IP = 64
#: Most open inbound connections in all.
MAX_INBOUND_CONNECTIONS = 1_024
#: An inbound connection that has not finished Noise and yamux in this time is closed.
HANDSHAKE_TIMEOUT_S = 5.0

# --- joining --------------------------------------------------------------------------------
#: Wrong proofs tolerated for one invite before it is burned.
MAX_INVITE_FAILURES = 5
#: Join attempts per remote IP address per minute (a token bucket).
MAX_JOINS_PER_IP_PER_MINUTE = 20
#: Longest join request or reply accepted.
MAX_JOIN_MESSAGE_BYTES = 4 * 1024 * 1024
#: Most open (unused, unexpired) invites at once.
MAX_OPEN_INVITES = 64
#: How long a joining device keeps asking while it waits for approval.
JOIN_APPROVAL_TIMEOUT_MS = 10 * 60 * 1000
#: Longest admin-protocol request or reply accepted (mesh/pairing/admin.py).
MAX_ADMIN_MESSAGE_BYTES = 1024 * 1024
#: A non-member connection that has not finished joining is closed after this long.
STRANGER_CONNECTION_TIMEOUT_MS = 30_000

# --- data directory (nodes/datadir.py) --------------------------------------------------------
#: A node starting while a command holds its data dir waits this long for it; a command
#: finding a node that has not opened its control socket yet waits as long for the socket.
DATA_DIR_LOCK_WAIT_S = 10.0

# --- local snapshot (crdt_state/snapshot.py) ------------------------------------------------
#: A running node refreshes its local materialized snapshot once this many envelopes were
#: stored after it (and when it closes), so opening replays at most about this many...
SNAPSHOT_EVERY_ENVELOPES = 1_000
#: ...or, under load, once the envelopes stored after it reach 1/this of those it covers.
#: A refresh costs O(document) on the node's event loop (57 ms at 20,000 records): growing
#: the interval with the log keeps their total cost linear and their stalls rare.
SNAPSHOT_GROWTH_DIVISOR = 4
#: A node with a stale snapshot refreshes it once no envelope was stored for this long.
SNAPSHOT_IDLE_MS = 2_000
#: Refused envelopes a node remembers in its store (the newest; for 'agentmesh state history').
MAX_REFUSALS_KEPT = 100

# --- the agent on the runtime (nodes/agent/) -----------------------------------------------
#: Most tasks the runtime's agent works on at once; later ones wait their turn.
MAX_RUNNING_TASKS = 8
#: Most tool calls (and LLM rounds) one task may make before it is failed.
MAX_AGENT_STEPS = 32
#: A sensitive tool call's approval request expires (denied: fail closed) after this long.
APPROVAL_TIMEOUT_MS = 24 * 3600 * 1000
#: Longest reply, progress note, tool result or notification text the agent writes.
MAX_AGENT_TEXT_BYTES = 16 * 1024
#: Longest wait for one chat-completions response from an LLM endpoint.
LLM_REQUEST_TIMEOUT_S = 120.0
#: Largest chat-completions response body read from an LLM endpoint.
MAX_LLM_RESPONSE_BYTES = 4 * 1024 * 1024
#: Largest file the built-in write_file tool writes into the runtime's workspace.
MAX_WORKSPACE_FILE_BYTES = 1024 * 1024
#: Most turns of the conversation (messages and replies) a chat reply is given.
MAX_CHAT_TURNS = 40

"""The committed protocol test vectors (tests/vectors/*.json, docs/PROTOCOL.md §10).

(a) The generator reproduces every committed file byte for byte.
(b) Every vector decodes with the library to exactly the recorded fields, and
    every invalid input is refused with exactly the named error class.

The checks read the JSON files, not the generator's objects, so they exercise
the files the way a second implementation would.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import base58
import pytest
from pycrdt import Map

import crdt_state.errors
import mesh.errors
from crdt_state import lib0
from crdt_state.envelope import (
    ENVELOPE_DOMAIN,
    client_id_of,
    decode_envelope,
    decode_proof,
    is_fork,
    proof_of,
)
from crdt_state.replica import Replica
from crdt_state.schema import device_doc
from crdt_state.storage.memory import MemoryStore
from crdt_state.yupdate import decode_update
from mesh import cbor
from mesh.identity import Identity, mesh_id_of, peer_id_of, public_key_of_peer_id, verify
from mesh.membership.log import LOG_DOMAIN, decode_entry
from mesh.membership.records import RECORD_DOMAIN, Certificate, Revocation, decode_record
from mesh.membership.state import Membership
from mesh.sync import frames
from mesh.transport.framing import FrameDecoder, encode_frame
from tests.vectors import generate

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
RECEIVE_NOW = 1_700_000_050_000


@cache
def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{name}.json").read_text(encoding="ascii"))
    return data


def unhex(text: str) -> bytes:
    return bytes.fromhex(text)


def errors_by_name() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {"CanonicalError": cbor.CanonicalError}
    for module in (mesh.errors, crdt_state.errors):
        for name, value in vars(module).items():
            if isinstance(value, type) and issubclass(value, BaseException):
                found[name] = value
    return found


def mesh_id() -> bytes:
    return unhex(load("log")["mesh_id"])


def log_entries(count: int) -> list[bytes]:
    return [unhex(e["wire"]) for e in load("log")["entries"][:count]]


def envelope_item(name: str) -> dict[str, Any]:
    for env in load("envelopes")["envelopes"]:
        if env["name"] == name:
            return env
    raise KeyError(name)


def envelope_wire(name: str) -> bytes:
    return unhex(envelope_item(name)["wire"])


def envelope_proof(name: str) -> bytes:
    """The fork-proof half of envelope ``name``: canonical CBOR [body, signature]."""
    item = envelope_item(name)
    return cbor.encode([unhex(item["body"]), unhex(item["signature"])])


def verifier(log_prefix: int) -> Replica:
    replica = Replica(mesh_id=mesh_id(), store=MemoryStore(), incarnation=bytes(16))
    for raw in log_entries(log_prefix):
        replica.add_log_entry(decode_entry(raw))
    return replica


def from_json(value: Any) -> Any:
    """Inverse of the generator's CBOR-as-JSON notation."""
    if isinstance(value, dict):
        return unhex(value["bytes"])
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


# --- (a) the files are what the generator makes -----------------------------------------------


def test_generator_reproduces_committed_files() -> None:
    built = generate.build()
    assert sorted(built) == sorted(f"{name}.json" for name in generate.FILES)
    for name, text in built.items():
        committed = (VECTORS / name).read_bytes()
        assert committed == text.encode("ascii"), (
            f"{name} differs; run python -m tests.vectors.generate"
        )


# --- (b) identities ------------------------------------------------------------------------------


def test_identities() -> None:
    data = load("identity")
    for item in data["identities"]:
        identity = Identity.from_seed(unhex(item["seed"]))
        key = unhex(item["public_key"])
        assert identity.public_key == key
        assert unhex(item["peer_id_bytes"]) == b"\x00\x24\x08\x01\x12\x20" + key
        assert base58.b58encode(unhex(item["peer_id_bytes"])).decode() == item["peer_id"]
        assert peer_id_of(key) == item["peer_id"] == identity.peer_id
        assert public_key_of_peer_id(item["peer_id"]) == key
        assert device_doc(item["peer_id"]) == item["device_doc"] == "device/" + item["peer_id"]
    for item in data["meshes"]:
        key = unhex(item["root_public_key"])
        assert unhex(item["sha256_input"]) == unhex(data["mesh_id_domain"]) + key
        assert data["mesh_id_domain"] == b"agentmesh/mesh-id/v1\x00".hex()
        assert hashlib.sha256(unhex(item["sha256_input"])).hexdigest() == item["mesh_id"]
        assert mesh_id_of(key).hex() == item["mesh_id"]
    assert data["client_id_domain"] == b"agentmesh/client-id/v1\x00".hex()
    assert data["client_id_mask"] == (1 << 53) - 1
    for item in data["client_ids"]:
        author, incarnation = unhex(item["author_public_key"]), unhex(item["incarnation"])
        assert len(incarnation) == 16
        assert unhex(item["sha256_input"]) == unhex(data["client_id_domain"]) + author + incarnation
        digest = hashlib.sha256(unhex(item["sha256_input"])).digest()
        assert digest.hex() == item["digest"]
        assert int.from_bytes(digest[:8], "big") == item["first8_big_endian"]
        assert item["client_id"] == item["first8_big_endian"] & data["client_id_mask"]
        assert client_id_of(author, incarnation) == item["client_id"]


# --- records ------------------------------------------------------------------------------------


def test_records() -> None:
    data = load("records")
    assert data["record_domain"] == RECORD_DOMAIN.hex() == b"agentmesh/record/v1\x00".hex()
    kinds = set()
    for item in data["records"]:
        wire, body, sig = unhex(item["wire"]), unhex(item["body"]), unhex(item["signature"])
        fields = item["fields"]
        assert cbor.encode([body, sig]) == wire
        assert unhex(item["signing_input"]) == RECORD_DOMAIN + body
        verify(unhex(fields["issuer"]), RECORD_DOMAIN + body, sig)
        assert hashlib.sha256(wire).hexdigest() == item["sha256_wire"]
        record = decode_record(wire)
        assert record.raw == wire
        assert record.mesh_id.hex() == fields["mesh_id"] == data["mesh_id"]
        assert record.issuer.hex() == fields["issuer"]
        assert record.subject.hex() == fields["subject"]
        assert record.issued_ms == fields["issued_ms"]
        head = [
            fields["version"],
            fields["kind"],
            unhex(fields["mesh_id"]),
            unhex(fields["issuer"]),
            unhex(fields["subject"]),
            fields["issued_ms"],
        ]
        if item["type"] == "certificate":
            assert isinstance(record, Certificate)
            assert fields["kind"] == 0
            assert sorted(record.caps) == fields["caps"]
            assert record.expires_ms == fields["expires_ms"]
            assert record.name == fields["name"]
            expected = [*head, fields["caps"], fields["expires_ms"], fields["name"]]
        else:
            assert isinstance(record, Revocation)
            assert fields["kind"] == 1
            expected = head
        assert cbor.encode(expected) == body
        kinds.add(item["type"])
    assert kinds == {"certificate", "revocation"}


# --- the membership log -----------------------------------------------------------------------


def _entry_body(fields: dict[str, Any]) -> list[Any]:
    body: list[Any] = [
        fields["version"],
        unhex(fields["mesh_id"]),
        fields["index"],
        unhex(fields["prev"]),
        fields["committed_ms"],
        unhex(fields["signer"]),
        fields["action"],
    ]
    cutoffs = [
        [c["doc"], unhex(c["incarnation"]), c["seq"], unhex(c["hash"])]
        for c in fields.get("cutoffs", [])
    ]
    if fields["action"] == 0:
        return [*body, unhex(fields["record"])]
    if fields["action"] == 1:
        return [*body, unhex(fields["record"]), cutoffs]
    quarantine = [unhex(fields[k]) for k in ("author", "incarnation", "proof_a", "proof_b")]
    return [*body, *quarantine, cutoffs]


def test_log_entries() -> None:
    data = load("log")
    assert data["log_domain"] == LOG_DOMAIN.hex() == b"agentmesh/log/v1\x00".hex()
    previous = bytes(32)
    actions = []
    for position, item in enumerate(data["entries"]):
        fields = item["fields"]
        wire, body, sig = unhex(item["wire"]), unhex(item["body"]), unhex(item["signature"])
        assert cbor.encode([body, sig]) == wire
        assert cbor.encode(_entry_body(fields)) == body
        assert unhex(item["signing_input"]) == LOG_DOMAIN + body
        verify(unhex(fields["signer"]), LOG_DOMAIN + body, sig)
        assert hashlib.sha256(body).hexdigest() == item["hash"]
        entry = decode_entry(wire)
        assert entry.hash.hex() == item["hash"]
        assert entry.index == fields["index"] == position
        assert entry.prev == unhex(fields["prev"]) == previous
        assert entry.mesh_id.hex() == fields["mesh_id"] == data["mesh_id"]
        assert entry.committed_ms == fields["committed_ms"]
        assert entry.signer.hex() == fields["signer"]
        assert entry.action == fields["action"]
        assert entry.record == unhex(fields.get("record", ""))
        assert [
            {"doc": c.doc, "incarnation": c.incarnation.hex(), "seq": c.seq, "hash": c.hash.hex()}
            for c in entry.cutoffs
        ] == fields.get("cutoffs", [])
        if entry.quarantine is not None:
            assert [x.hex() for x in entry.quarantine] == [
                fields["author"],
                fields["incarnation"],
                fields["proof_a"],
                fields["proof_b"],
            ]
            # Each half is [body, signature] of an envelope of envelopes.json, without its update.
            name_a, name_b = item["proof_of"]
            assert entry.quarantine[2:] == (envelope_proof(name_a), envelope_proof(name_b))
            a, b = decode_proof(entry.quarantine[2]), decode_proof(entry.quarantine[3])
            assert is_fork(a, b)
            assert (a.author, a.incarnation) == entry.quarantine[:2]
        previous = entry.hash
        actions.append(entry.action)
    assert actions[0] == 0 and {0, 1, 2} <= set(actions)


def test_log_fold() -> None:
    data = load("log")
    folded = Membership(unhex(data["mesh_id"]))
    for raw in log_entries(len(data["entries"])):
        assert folded.add(decode_entry(raw)) is True
    for raw in log_entries(len(data["entries"])):
        assert folded.add(decode_entry(raw)) is False  # duplicates are no-ops
    after = data["after_fold"]
    assert folded.length == after["length"]
    assert folded.head.hex() == after["head"] == data["entries"][-1]["hash"]
    assert (folded.runtime_key or b"").hex() == after["runtime_key"]
    assert sorted([a.hex(), i.hex()] for a, i in folded.quarantined) == after["quarantined"]
    for member in after["members"]:
        key = unhex(member["public_key"])
        assert folded.is_member(key) == member["is_member"]
        assert sorted(folded.caps(key)) == member["caps"]
        record = folded.member(key)
        assert (None if record is None else record.revoked_at) == member["revoked_at"]
        for position, caps in enumerate(member["caps_at"]):
            assert sorted(folded.caps_at(key, position)) == caps
    for limit in after["chain_limits"]:
        got = folded.chain_limit(unhex(limit["author"]), unhex(limit["incarnation"]), limit["doc"])
        assert got == limit["chain_limit"]


# --- envelopes ----------------------------------------------------------------------------------


def test_envelopes() -> None:
    data = load("envelopes")
    clients = {c["incarnation"]: c["client_id"] for c in load("identity")["client_ids"]}
    assert data["envelope_domain"] == ENVELOPE_DOMAIN.hex() == b"agentmesh/envelope/v1\x00".hex()
    for item in data["envelopes"]:
        fields = item["fields"]
        wire, body, sig = unhex(item["wire"]), unhex(item["body"]), unhex(item["signature"])
        update = unhex(item["update"])
        assert cbor.encode([body, sig, update]) == wire
        assert cbor.encode([body, sig]) == unhex(item["proof"])
        assert hashlib.sha256(update).hexdigest() == fields["update_hash"]
        expected_body = [
            fields["version"],
            unhex(fields["mesh_id"]),
            fields["doc"],
            unhex(fields["author"]),
            unhex(fields["incarnation"]),
            fields["seq"],
            fields["hlc"],
            fields["mship"],
            fields["context"],
            unhex(fields["prev"]),
            unhex(fields["update_hash"]),
        ]
        assert cbor.encode(expected_body) == body
        assert unhex(item["signing_input"]) == ENVELOPE_DOMAIN + body
        verify(unhex(fields["author"]), ENVELOPE_DOMAIN + body, sig)
        assert hashlib.sha256(body).hexdigest() == item["hash"]
        env = decode_envelope(wire)
        assert env.raw == wire
        assert env.hash.hex() == item["hash"]
        assert env.mesh_id.hex() == fields["mesh_id"] == data["mesh_id"]
        assert env.doc == fields["doc"]
        assert env.author.hex() == fields["author"]
        assert env.incarnation.hex() == fields["incarnation"]
        assert env.seq == fields["seq"]
        assert env.hlc == fields["hlc"]
        assert env.mship == fields["mship"]
        assert [list(p) for p in env.context] == fields["context"]
        assert env.prev.hex() == fields["prev"]
        assert env.update.hex() == item["update"]
        assert (env.body, env.signature) == (body, sig)
        assert proof_of(env) == unhex(item["proof"])
        header = decode_proof(unhex(item["proof"]))
        assert (header.mesh_id, header.doc, header.author, header.incarnation, header.seq) == (
            env.mesh_id,
            env.doc,
            env.author,
            env.incarnation,
            env.seq,
        )
        assert header.hash == env.hash
        assert env.client_id == item["client_id"] == clients[fields["incarnation"]]
        decoded = decode_update(env.update)
        got = item["update_decoded"]
        assert [[g.client, g.clock, g.length, g.has_skip, g.has_gc] for g in decoded.groups] == [
            [g["client"], g["clock"], g["length"], g["has_skip"], g["has_gc"]]
            for g in got["groups"]
        ]
        assert sorted([c, e] for c, e in decoded.ref_ends.items()) == got["ref_ends"]
        assert [list(d) for d in decoded.deletes] == got["deletes"]


def test_envelope_chains() -> None:
    """prev links and seqs as PROTOCOL.md states them, from the JSON alone."""
    heads: dict[tuple[str, int], tuple[int, str]] = {}
    for item in load("envelopes")["envelopes"]:
        if item["name"] == "F2":  # the second half of a fork
            continue
        fields = item["fields"]
        chain = (fields["doc"], item["client_id"])
        seq, prev = heads.get(chain, (0, bytes(32).hex()))
        assert fields["seq"] == seq + 1
        assert fields["prev"] == prev
        heads[chain] = (fields["seq"], item["hash"])


def test_receive_all_valid() -> None:
    data = load("envelopes")
    replica = verifier(len(load("log")["entries"]))
    for name in ("A1", "A2", "R1", "R2", "R3", "P1", "P2", "F1"):
        assert (
            replica.receive(decode_envelope(envelope_wire(name)), RECEIVE_NOW).value == "accepted"
        )
    after = data["after_receiving_all_valid"]
    chains = [
        {"doc": doc, "client": client, "seq": c.seq, "clock_end": c.clock_end}
        for (doc, client), c in sorted(replica.chains.items())
    ]
    assert chains == after["chains"]
    assert sorted(replica.docs) == sorted(after["docs"])
    for doc, state in after["docs"].items():
        ydoc = replica.docs[doc]
        vector = lib0.decode_state_vector(ydoc.get_state())
        assert sorted([c, k] for c, k in vector.items()) == state["state_vector"]
        for root, content in state["roots"].items():
            assert (ydoc.get(root, type=Map).to_py() or {}) == content


@pytest.mark.parametrize("case", sorted(load("envelopes")["receive_cases"]))
def test_receive_cases(case: str) -> None:
    spec = load("envelopes")["receive_cases"][case]
    replica = verifier(spec["log_prefix"])
    entries = log_entries(len(load("log")["entries"]))
    for step in spec["steps"]:
        if "log_entry" in step:
            replica.add_log_entry(decode_entry(entries[step["log_entry"]]))
            continue
        env = decode_envelope(envelope_wire(step["envelope"]))
        if step["outcome"] in ("accepted", "held", "duplicate"):
            assert replica.receive(env, RECEIVE_NOW).value == step["outcome"]
        else:
            with pytest.raises(crdt_state.errors.EnvelopeRejected) as info:
                replica.receive(env, RECEIVE_NOW)
            assert type(info.value).__name__ == step["outcome"]
    vectors = {doc: sorted([c, q] for c, q in v.items()) for doc, v in replica.vectors().items()}
    assert vectors == spec["vectors_after"]
    assert len(replica.held) == spec["held_after"]


# --- frames ---------------------------------------------------------------------------------------


def test_frames() -> None:
    data = load("frames")
    assert data["protocol_version"] == frames.PROTOCOL_VERSION == 1
    types = {"HELLO": 1, "RECORDS": 2, "ENVELOPES": 3, "ACK": 4, "FORK": 5, "ERROR": 6}
    classes = {
        "HELLO": frames.Hello,
        "RECORDS": frames.Records,
        "ENVELOPES": frames.Envelopes,
        "ACK": frames.Ack,
        "FORK": frames.Fork,
        "ERROR": frames.Error,
    }
    seen = set()
    for item in data["frames"]:
        raw = unhex(item["hex"])
        value = from_json(item["value"])
        assert cbor.encode(value) == raw
        framed = unhex(item["framed"])
        assert encode_frame(raw) == framed
        assert FrameDecoder().feed(framed) == [raw]
        decoder = FrameDecoder()  # byte by byte
        assert [f for b in framed for f in decoder.feed(bytes([b]))] == [raw]
        assert decoder.at_boundary()
        assert value[0] == types[item["type"]]
        frame = frames.decode(raw)
        assert isinstance(frame, classes[item["type"]])
        assert frames.encode(frame) == raw
        if isinstance(frame, frames.Hello):
            assert [frame.version, frame.mesh_id, frame.log_length, frame.log_head] == value[1:5]
            assert frame.log_head.hex() == load("log")["entries"][-1]["hash"]
            assert [
                [doc, [[c, q] for c, q in sorted(v.items())]] for doc, v in frame.vectors.items()
            ] == value[5]
        elif isinstance(frame, frames.Records):
            assert list(frame.entries) == value[1] == log_entries(len(value[1]))
        elif isinstance(frame, frames.Envelopes):
            assert frame.batch_no == value[1]
            assert list(frame.envelopes) == value[2]
            assert [decode_envelope(e).seq for e in frame.envelopes] == [1, 2]
        elif isinstance(frame, frames.Ack):
            assert frame.batch_no == value[1]
            assert [
                [doc, [[c, q] for c, q in sorted(v.items())]] for doc, v in frame.heads.items()
            ] == value[2]
            assert [[r.doc, r.client, r.seq, r.code] for r in frame.refused] == value[3]
        elif isinstance(frame, frames.Fork):
            assert [frame.existing, frame.incoming] == value[1:]
            assert [frame.existing, frame.incoming] == [envelope_proof("F1"), envelope_proof("F2")]
            assert is_fork(decode_proof(frame.existing), decode_proof(frame.incoming))
        else:
            assert isinstance(frame, frames.Error)
            assert [frame.code, frame.message] == value[1:]
        seen.add(item["type"])
    assert seen == set(types)


# --- invalid inputs -------------------------------------------------------------------------


def _refuse(case: dict[str, Any]) -> None:
    data = unhex(case["hex"])
    kind = case["kind"]
    if kind == "cbor":
        cbor.decode(data)
    elif kind == "record":
        decode_record(data)
    elif kind == "log_entry":
        decode_entry(data)
    elif kind == "envelope":
        decode_envelope(data)
    elif kind == "fork_proof":
        decode_proof(data)
    elif kind == "frame":
        frames.decode(data)
    elif kind == "framing":
        FrameDecoder().feed(data)
    elif kind == "membership":
        folded = Membership(mesh_id())
        for raw in log_entries(case["log_prefix"]):
            folded.add(decode_entry(raw))
        entry = decode_entry(data)  # well formed and correctly signed
        folded.add(entry)
    elif kind == "receive":
        replica = verifier(case["log_prefix"])
        for name in case["accepted"]:
            outcome = replica.receive(decode_envelope(envelope_wire(name)), RECEIVE_NOW)
            assert outcome.value == "accepted"
        env = decode_envelope(data)  # well formed and correctly signed
        replica.receive(env, RECEIVE_NOW)
    else:
        raise AssertionError(f"unknown kind {kind}")


INVALID = load("invalid")["cases"]


@pytest.mark.parametrize("case", INVALID, ids=[f"{c['kind']}:{c['name']}" for c in INVALID])
def test_invalid(case: dict[str, Any]) -> None:
    expected = errors_by_name()[case["error"]]
    with pytest.raises(expected) as info:
        _refuse(case)
    assert type(info.value).__name__ == case["error"]


def test_invalid_covers_every_kind() -> None:
    data = load("invalid")
    assert {c["kind"] for c in data["cases"]} == set(data["kinds"])
    names = [(c["kind"], c["name"]) for c in data["cases"]]
    assert len(names) == len(set(names))


# --- pairing (PROTOCOL.md §11) -------------------------------------------------------------------


def test_pairing_invite_join_and_admin_messages() -> None:
    import hmac

    from mesh.pairing.admin import AdminReply, decode_request, encode_request
    from mesh.pairing.invite import InviteError, parse_code
    from mesh.pairing.protocol import JoinReply, JoinRequest

    data = load("pairing")
    inv = data["invite"]
    secret = unhex(inv["secret"])
    body = cbor.encode(
        [
            1,
            unhex(inv["mesh_id"]),
            unhex(inv["runtime_key"]),
            inv["addresses"],
            secret,
            inv["expires_ms"],
        ]
    )
    assert body == unhex(inv["body"])
    import base64

    assert inv["code"] == "am1-" + base64.b32encode(body).decode().rstrip("=").lower()
    parsed = parse_code(inv["code"].upper())  # any letter case
    assert parsed.secret == secret and parsed.addresses == tuple(inv["addresses"])
    assert hashlib.sha256(b"agentmesh/invite-id/v1\x00" + secret).digest()[:16] == unhex(
        inv["invite_id"]
    )
    join = data["join"]
    device = unhex(join["device_key"])
    message = b"agentmesh/join/v1\x00" + unhex(inv["mesh_id"]) + unhex(inv["runtime_key"]) + device
    assert hmac.new(secret, message, hashlib.sha256).digest() == unhex(join["proof"])
    digest = hmac.new(
        secret, b"agentmesh/sas/v1\x00" + unhex(inv["runtime_key"]) + device, hashlib.sha256
    ).digest()
    assert f"{int.from_bytes(digest[:4], 'big') % 1_000_000:06d}" == join["sas"]
    request = JoinRequest.decode(unhex(join["request"]))
    assert (request.invite_id, request.proof, request.name) == (
        unhex(inv["invite_id"]),
        unhex(join["proof"]),
        join["request_name"],
    )
    for name, raw in join["replies"].items():
        assert JoinReply.decode(unhex(raw)).encode() == unhex(raw), name
    joined = JoinReply.decode(unhex(join["replies"]["joined"]))
    assert [e.hex() for e in joined.entries] == join["joined_entries"]
    assert JoinReply.decode(unhex(join["replies"]["pending"])).sas == join["sas"]
    for name, raw in data["admin"]["requests"].items():
        assert encode_request(decode_request(unhex(raw))) == unhex(raw), name
    for name, raw in data["admin"]["replies"].items():
        assert AdminReply.decode(unhex(raw)).encode() == unhex(raw), name
    for code in data["invalid_codes"]:
        with pytest.raises(InviteError):
            parse_code(code)

"""Membership records: signing, decoding, canonical form, capability names."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh import cbor
from mesh.errors import BadSignature, MalformedRecord, MembershipError
from mesh.identity import Identity, mesh_id_of
from mesh.limits import MAX_NAME_BYTES, MAX_RECORD_BYTES
from mesh.membership.log import LOG_DOMAIN
from mesh.membership.records import (
    ADMIN,
    APPROVE,
    CAPABILITIES,
    KIND_CERTIFICATE,
    KIND_REVOCATION,
    READ,
    RECORD_DOMAIN,
    RECORD_VERSION,
    RUNTIME,
    WRITE,
    Certificate,
    Revocation,
    decode_record,
    issue_certificate,
    issue_revocation,
    parse_caps,
)
from tests.support import NOW, YEAR_MS, seeded_identity

ROOT = seeded_identity(1)
ADMIN_ID = seeded_identity(3)
DEVICE = seeded_identity(4)
MESH = mesh_id_of(ROOT.public_key)
U64 = (1 << 64) - 1

caps_sets = st.frozensets(st.sampled_from(sorted(CAPABILITIES)))
names = st.text(max_size=MAX_NAME_BYTES).filter(lambda s: len(s.encode()) <= MAX_NAME_BYTES)
identities = st.integers(1, 2**64).map(seeded_identity)


def cert_body(
    *,
    issuer: Identity = ROOT,
    subject: bytes = DEVICE.public_key,
    caps: Any = (READ, WRITE),
    name: Any = "phone",
    issued: Any = NOW,
    expires: Any = NOW + YEAR_MS,
    mesh: Any = MESH,
    version: Any = RECORD_VERSION,
    kind: Any = KIND_CERTIFICATE,
) -> list[Any]:
    return [version, kind, mesh, issuer.public_key, subject, issued, list(caps), expires, name]


def revocation_body(issuer: Identity = ROOT, subject: bytes = DEVICE.public_key) -> list[Any]:
    return [RECORD_VERSION, KIND_REVOCATION, MESH, issuer.public_key, subject, NOW]


def signed(body_bytes: bytes, signer: Identity = ROOT, domain: bytes = RECORD_DOMAIN) -> bytes:
    """Wire form of ``body_bytes`` signed (validly) by ``signer``."""
    return cbor.encode([body_bytes, signer.sign(domain + body_bytes)])


def canonical_cert() -> Certificate:
    return issue_certificate(
        ROOT, MESH, DEVICE.public_key, frozenset({READ, WRITE}), NOW, NOW + YEAR_MS, "phone"
    )


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- round trips -----------------------------------------------------------------------


@given(
    issuer=identities,
    subject=identities,
    caps=caps_sets,
    issued=st.integers(0, U64),
    expires=st.integers(0, U64),
    name=names,
)
def test_certificate_round_trip(
    *,
    issuer: Identity,
    subject: Identity,
    caps: frozenset[str],
    issued: int,
    expires: int,
    name: str,
) -> None:
    cert = issue_certificate(issuer, MESH, subject.public_key, caps, issued, expires, name)
    assert (cert.mesh_id, cert.issuer, cert.subject) == (
        MESH,
        issuer.public_key,
        subject.public_key,
    )
    assert (cert.caps, cert.issued_ms, cert.expires_ms, cert.name) == (caps, issued, expires, name)
    again = decode_record(cert.raw)
    assert again == cert
    assert isinstance(again, Certificate)
    assert again.record_hash == hashlib.sha256(cert.raw).digest()
    assert cert.issued_by_root() == (issuer.public_key == ROOT.public_key)
    body = cbor.decode(cbor.decode(cert.raw)[0])
    assert body[6] == sorted(caps)


def test_root_issued_certificate() -> None:
    cert = canonical_cert()
    assert cert.issued_by_root()
    assert decode_record(cert.raw) == cert
    other = issue_certificate(ADMIN_ID, MESH, DEVICE.public_key, frozenset(), NOW, NOW + 1)
    assert not other.issued_by_root()


@given(issuer=identities, subject=identities, issued=st.integers(0, U64))
def test_revocation_round_trip(issuer: Identity, subject: Identity, issued: int) -> None:
    revocation = issue_revocation(issuer, MESH, subject.public_key, issued)
    assert (revocation.issuer, revocation.subject, revocation.issued_ms) == (
        issuer.public_key,
        subject.public_key,
        issued,
    )
    again = decode_record(revocation.raw)
    assert isinstance(again, Revocation)
    assert again == revocation
    assert again.record_hash == hashlib.sha256(revocation.raw).digest()
    assert issue_revocation(ROOT, MESH, subject.public_key, issued).issued_by_root()


def test_record_kinds_are_distinct() -> None:
    assert isinstance(decode_record(canonical_cert().raw), Certificate)
    assert isinstance(
        decode_record(issue_revocation(ROOT, MESH, DEVICE.public_key, NOW).raw), Revocation
    )


# --- tampering ---------------------------------------------------------------------------


def _assert_refused(raw: bytes) -> None:
    with pytest.raises((MalformedRecord, BadSignature)) as excinfo:
        decode_record(raw)
    assert isinstance(excinfo.value, MembershipError)


@pytest.mark.parametrize("kind", ["certificate", "revocation"])
def test_every_single_bit_flip_is_refused(kind: str) -> None:
    if kind == "certificate":
        raw = canonical_cert().raw
    else:
        raw = issue_revocation(ADMIN_ID, MESH, DEVICE.public_key, NOW).raw
    for bit in range(len(raw) * 8):
        _assert_refused(flip(raw, bit))


@given(
    caps=caps_sets,
    name=names,
    issued=st.integers(0, U64),
    data=st.data(),
)
def test_random_bit_flips_are_refused(
    caps: frozenset[str], name: str, issued: int, data: st.DataObject
) -> None:
    cert = issue_certificate(ADMIN_ID, MESH, DEVICE.public_key, caps, issued, U64, name)
    bit = data.draw(st.integers(0, len(cert.raw) * 8 - 1))
    _assert_refused(flip(cert.raw, bit))


def test_truncations_and_extensions_are_refused() -> None:
    raw = canonical_cert().raw
    for cut in range(len(raw)):
        _assert_refused(raw[:cut])
    for extra in (b"\x00", b"\xff", raw):
        _assert_refused(raw + extra)


def test_signature_by_another_key_is_refused() -> None:
    body = cbor.encode(cert_body(issuer=ROOT))
    with pytest.raises(BadSignature):
        decode_record(signed(body, signer=ADMIN_ID))


def test_signature_without_record_domain_is_refused() -> None:
    body = cbor.encode(cert_body())
    with pytest.raises(BadSignature):
        decode_record(signed(body, domain=b""))
    with pytest.raises(BadSignature):
        decode_record(signed(body, domain=LOG_DOMAIN))
    assert isinstance(decode_record(signed(body)), Certificate)


def test_oversized_record_is_refused_before_decoding() -> None:
    with pytest.raises(MalformedRecord, match="too large"):
        decode_record(b"\x00" * (MAX_RECORD_BYTES + 1))


# --- canonical CBOR ------------------------------------------------------------------------


def _body_bytes() -> bytes:
    body = cbor.encode(cert_body())
    assert body[0] == 0x89 and body[1] == 0x01  # array(9), version 1
    return body


def _noncanonical_bodies() -> dict[str, bytes]:
    body = _body_bytes()
    name = cbor.encode("phone")
    assert body.endswith(name)
    caps = cbor.encode([READ, WRITE])
    assert caps in body
    return {
        "non-minimal version": b"\x89\x18\x01" + body[2:],
        "non-minimal array length": b"\x98\x09" + body[1:],
        "indefinite-length array": b"\x9f" + body[1:] + b"\xff",
        "indefinite-length caps": body.replace(caps, b"\x9f" + caps[1:] + b"\xff"),
        "non-minimal caps length": body.replace(caps, b"\x98\x02" + caps[1:]),
        "indefinite-length name": body[: -len(name)] + b"\x7f" + name + b"\xff",
        "non-minimal name length": body[: -len(name)] + b"\x78\x05" + name[1:],
        "trailing byte": body + b"\x00",
        "bignum issued": cbor2.dumps(
            [*cert_body()[:5], cbor2.CBORTag(2, NOW.to_bytes(6, "big")), *cert_body()[6:]]
        ),
        "float issued": cbor.encode(cert_body(issued=float(NOW))),
        "bool version": cbor.encode(cert_body(version=True)),
        "bool kind": cbor.encode(cert_body(kind=False)),
        "negative issued": cbor.encode(cert_body(issued=-1)),
        "map body": cbor.encode(dict(enumerate(cert_body()))),
    }


@pytest.mark.parametrize("name", sorted(_noncanonical_bodies()))
def test_noncanonical_body_resigned_by_issuer_is_refused(name: str) -> None:
    body = _noncanonical_bodies()[name]
    assert body != _body_bytes()
    with pytest.raises(MalformedRecord):
        decode_record(signed(body))


def test_bool_revocation_kind_is_refused() -> None:
    body = cbor.encode([RECORD_VERSION, True, MESH, ROOT.public_key, DEVICE.public_key, NOW])
    with pytest.raises(MalformedRecord):
        decode_record(signed(body))


def test_noncanonical_outer_wrapping_is_refused() -> None:
    raw = canonical_cert().raw
    body, signature = cbor.decode(raw)
    assert raw[0] == 0x82
    header = cbor.encode(body)[: -len(body)]
    assert header[0] == 0x58  # a byte string with a one-byte length
    variants = [
        b"\x9f" + raw[1:] + b"\xff",  # indefinite-length outer array
        b"\x98\x02" + raw[1:],  # non-minimal outer array length
        b"\x82\x59\x00" + header[1:] + body + cbor.encode(signature),  # non-minimal length
        b"\x82\x5f" + cbor.encode(body) + b"\xff" + cbor.encode(signature),  # chunked body
        cbor.encode([body, signature, b""]),
        cbor.encode([body]),
        cbor.encode([body, signature[:63]]),
        cbor.encode([body, signature + b"\x00"]),
        cbor.encode([list(cbor.decode(body)), signature]),
        cbor.encode({"body": body, "signature": signature}),
    ]
    for variant in variants:
        with pytest.raises(MalformedRecord):
            decode_record(variant)


# --- field checks ---------------------------------------------------------------------------

BAD_BODIES: dict[str, list[Any]] = {
    "unknown capability": cert_body(caps=[READ, "root"]),
    "capitalised capability": cert_body(caps=["Read"]),
    "unsorted caps": cert_body(caps=[WRITE, READ]),
    "duplicate caps": cert_body(caps=[READ, READ]),
    "caps not an array": cert_body(caps=READ),
    "caps with a number": cert_body(caps=[1]),
    "oversized name": cert_body(name="x" * (MAX_NAME_BYTES + 1)),
    "oversized utf-8 name": cert_body(name="é" * (MAX_NAME_BYTES // 2 + 1)),
    "name not text": cert_body(name=b"phone"),
    "unknown kind": cert_body(kind=2),
    "version 2": cert_body(version=2),
    "version 0": cert_body(version=0),
    "short mesh id": cert_body(mesh=MESH[:31]),
    "long mesh id": cert_body(mesh=MESH + b"\x00"),
    "short subject": cert_body(subject=DEVICE.public_key[:31]),
    "expiry past u64": cert_body(expires=U64 + 1),
    "certificate of 8 fields": cert_body()[:8],
    "certificate of 10 fields": [*cert_body(), 0],
    "revocation of 7 fields": [*revocation_body(), 0],
    "revocation of 5 fields": revocation_body()[:5],
    "not an array": [],
}


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_fields_are_refused(name: str) -> None:
    with pytest.raises(MalformedRecord):
        decode_record(signed(cbor.encode(BAD_BODIES[name])))


def test_issuer_field_must_be_a_key() -> None:
    body = cert_body()
    body[3] = ROOT.public_key[:31]
    with pytest.raises(MalformedRecord):
        decode_record(signed(cbor.encode(body)))


def test_name_limit_is_in_utf8_bytes() -> None:
    for name in ("x" * MAX_NAME_BYTES, "é" * (MAX_NAME_BYTES // 2), ""):
        cert = issue_certificate(ROOT, MESH, DEVICE.public_key, frozenset(), NOW, NOW + 1, name)
        assert decode_record(cert.raw) == cert
    for name in ("x" * (MAX_NAME_BYTES + 1), "é" * (MAX_NAME_BYTES // 2) + "x"):
        with pytest.raises(MalformedRecord):
            issue_certificate(ROOT, MESH, DEVICE.public_key, frozenset(), NOW, NOW + 1, name)


def test_issue_refuses_unknown_capabilities() -> None:
    with pytest.raises(MalformedRecord):
        issue_certificate(ROOT, MESH, DEVICE.public_key, frozenset({"root"}), NOW, NOW + 1)


@given(caps=caps_sets)
def test_every_known_capability_set_is_accepted(caps: frozenset[str]) -> None:
    record = decode_record(signed(cbor.encode(cert_body(caps=sorted(caps)))))
    assert isinstance(record, Certificate)
    assert record.caps == caps


def test_changed_fields_no_longer_match_the_signed_form() -> None:
    cert = canonical_cert()
    forged = dataclasses.replace(cert, caps=frozenset(CAPABILITIES))
    assert decode_record(forged.raw) == cert != forged


# --- parse_caps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("read,write", {READ, WRITE}),
        ("read", {READ}),
        (" read , write ,approve", {READ, WRITE, APPROVE}),
        ("read,,write,", {READ, WRITE}),
        ("read,read", {READ}),
        ("", set()),
        (" , ", set()),
        ("admin,runtime,read,write,approve", set(CAPABILITIES)),
    ],
)
def test_parse_caps(text: str, expected: set[str]) -> None:
    assert parse_caps(text) == frozenset(expected)


@pytest.mark.parametrize("text", ["root", "read,Write", "read;write", "read write", "*", "admins"])
def test_parse_caps_refuses_unknown_names(text: str) -> None:
    with pytest.raises(ValueError, match="unknown capabilities"):
        parse_caps(text)


def test_parse_caps_names_every_unknown_capability() -> None:
    with pytest.raises(ValueError, match="root, sudo"):
        parse_caps("sudo,read,root")


@given(caps=caps_sets)
def test_parse_caps_round_trips(caps: frozenset[str]) -> None:
    assert parse_caps(",".join(sorted(caps))) == caps
    assert ADMIN in CAPABILITIES and RUNTIME in CAPABILITIES

"""Node identities: key files, PeerIds (checked against py-libp2p), signatures."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import base58
import multihash  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_key_pair
from libp2p.crypto.secp256k1 import create_new_key_pair as secp256k1_key_pair
from libp2p.peer.id import ID

from mesh.errors import BadSignature, KeyFileError
from mesh.identity import (
    KEY_FILE_HEADER,
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    Identity,
    mesh_id_of,
    peer_id_of,
    public_key_of_peer_id,
    verify,
)
from tests.support import seeded_identity

REPO = Path(__file__).resolve().parents[2]
seeds = st.binary(min_size=32, max_size=32)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    path.chmod(mode)


def key_file_text(seed: bytes) -> str:
    return f"{KEY_FILE_HEADER} {base64.b64encode(seed).decode('ascii')}\n"


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- key files ---------------------------------------------------------------------


def test_save_writes_mode_0600_and_load_round_trips(tmp_path: Path) -> None:
    identity = seeded_identity(7)
    path = tmp_path / "keys" / "nested" / "node.key"
    identity.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text(encoding="ascii") == key_file_text(identity.seed)
    loaded = Identity.load(path)
    assert loaded.seed == identity.seed
    assert loaded.public_key == identity.public_key
    assert loaded.peer_id == identity.peer_id


def test_save_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        seeded_identity(8).save(tmp_path / "node.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600


def test_save_never_overwrites_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first = seeded_identity(1)
    first.save(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite") as excinfo:
        seeded_identity(2).save(path)
    assert str(path) in str(excinfo.value)
    assert path.read_bytes() == before
    assert Identity.load(path).seed == first.seed


def test_save_never_overwrites_any_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"precious")
    with pytest.raises(KeyFileError):
        seeded_identity(3).save(path)
    assert path.read_bytes() == b"precious"


def test_save_does_not_follow_a_dangling_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "stolen.key"
    target.parent.mkdir()
    link = tmp_path / "node.key"
    link.symlink_to(target)
    with pytest.raises(KeyFileError):
        seeded_identity(4).save(link)
    assert not target.exists()


@pytest.mark.parametrize("bits", [0o040, 0o020, 0o010, 0o004, 0o002, 0o001, 0o077, 0o644])
def test_load_refuses_group_or_other_bits(tmp_path: Path, bits: int) -> None:
    path = tmp_path / "node.key"
    seeded_identity(5).save(path)
    path.chmod(0o600 | bits)
    with pytest.raises(KeyFileError) as excinfo:
        Identity.load(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert f"chmod 600 {path}" in message
    assert f"{stat.S_IMODE(path.stat().st_mode):04o}" in message
    path.chmod(0o600)
    assert Identity.load(path).seed == seeded_identity(5).seed


@pytest.mark.parametrize("mode", [0o400, 0o600, 0o700])
def test_load_accepts_owner_only_modes(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    seeded_identity(6).save(path)
    path.chmod(mode)
    assert Identity.load(path).seed == seeded_identity(6).seed


def test_load_refuses_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(KeyFileError, match="no key file") as excinfo:
        Identity.load(path)
    assert str(path) in str(excinfo.value)


def test_load_refuses_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.mkdir(mode=0o700)
    with pytest.raises(KeyFileError) as excinfo:
        Identity.load(path)
    assert str(path) in str(excinfo.value)


GOOD_SEED = bytes(range(32))
MALFORMED: dict[str, bytes] = {
    "empty": b"",
    "header only": KEY_FILE_HEADER.encode(),
    "header and space": KEY_FILE_HEADER.encode() + b" \n",
    "wrong header": key_file_text(GOOD_SEED)
    .replace(KEY_FILE_HEADER, "agentmesh-x25519-v1")
    .encode(),
    "no header": base64.b64encode(GOOD_SEED) + b"\n",
    "short seed": f"{KEY_FILE_HEADER} {base64.b64encode(GOOD_SEED[:31]).decode()}\n".encode(),
    "long seed": f"{KEY_FILE_HEADER} {base64.b64encode(GOOD_SEED + b'x').decode()}\n".encode(),
    "not base64": f"{KEY_FILE_HEADER} {'!' * 44}\n".encode(),
    "base64 with junk": key_file_text(GOOD_SEED).replace("\n", " extra\n").encode(),
    "two keys": (key_file_text(GOOD_SEED) * 2).encode(),
    "raw seed": GOOD_SEED,
    "non-ascii": key_file_text(GOOD_SEED).encode() + "é".encode(),
    "binary": bytes(range(256)),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_load_refuses_malformed_files(tmp_path: Path, name: str) -> None:
    path = tmp_path / "node.key"
    write_private(path, MALFORMED[name])
    with pytest.raises(KeyFileError) as excinfo:
        Identity.load(path)
    assert str(path) in str(excinfo.value)


def test_load_refuses_every_truncation(tmp_path: Path) -> None:
    text = key_file_text(GOOD_SEED).encode()
    for cut in range(len(text) - 1):  # the last cut only drops the trailing newline
        path = tmp_path / f"cut{cut}.key"
        write_private(path, text[:cut])
        with pytest.raises(KeyFileError):
            Identity.load(path)
    path = tmp_path / "no-newline.key"
    write_private(path, text[:-1])
    assert Identity.load(path).seed == GOOD_SEED


@settings(max_examples=25)
@given(seed=seeds)
def test_key_file_round_trips_any_seed(seed: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "node.key"
        Identity.from_seed(seed).save(path)
        assert Identity.load(path).seed == seed


@given(seed=seeds)
def test_seed_round_trips(seed: bytes) -> None:
    identity = Identity.from_seed(seed)
    assert identity.seed == seed
    assert Identity.from_seed(identity.seed).public_key == identity.public_key
    assert len(identity.public_key) == PUBLIC_KEY_BYTES


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_from_seed_refuses_wrong_lengths(length: int) -> None:
    with pytest.raises(ValueError):
        Identity.from_seed(bytes(length))


def test_generate_makes_distinct_keys() -> None:
    assert Identity.generate().public_key != Identity.generate().public_key


# --- PeerIds --------------------------------------------------------------------------


@given(seed=seeds)
def test_peer_id_matches_py_libp2p(seed: bytes) -> None:
    identity = Identity.from_seed(seed)
    key_pair = ed25519_key_pair(seed)
    assert key_pair.public_key.to_bytes() == identity.public_key
    libp2p_id = ID.from_pubkey(key_pair.public_key)
    assert peer_id_of(identity.public_key) == libp2p_id.to_base58() == identity.peer_id
    assert ID.from_base58(identity.peer_id) == libp2p_id
    extracted = libp2p_id.extract_public_key()
    assert extracted is not None
    assert extracted.to_bytes() == identity.public_key
    assert public_key_of_peer_id(libp2p_id.to_base58()) == identity.public_key


def test_peer_id_matches_py_libp2p_private_key_class() -> None:
    private = Ed25519PrivateKey.new(bytes(32))
    public = private.get_public_key()
    assert isinstance(public, Ed25519PublicKey)
    pid = peer_id_of(public.to_bytes())
    assert pid == ID.from_pubkey(public).to_base58()
    assert pid.startswith("12D3KooW")
    assert pid == Identity.from_seed(bytes(32)).peer_id


@given(public_key=st.binary(min_size=32, max_size=32))
def test_public_key_of_peer_id_round_trips(public_key: bytes) -> None:
    assert public_key_of_peer_id(peer_id_of(public_key)) == public_key


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_peer_id_of_refuses_wrong_lengths(length: int) -> None:
    with pytest.raises(ValueError):
        peer_id_of(bytes(length))


def _secp256k1_peer_id() -> str:
    public = secp256k1_key_pair(b"\x01" * 32).public_key
    return str(ID.from_pubkey(public).to_base58())


def _sha256_peer_id() -> str:
    return str(ID(multihash.encode(hashlib.sha256(b"rsa key").digest(), "sha2-256")).to_base58())


def _b58(data: bytes) -> str:
    return str(base58.b58encode(data).decode("ascii"))


ED_PREFIX = b"\x00\x24\x08\x01\x12\x20"
KEY = seeded_identity(9).public_key
GOOD_ID = peer_id_of(KEY)
NOT_ED25519: dict[str, str] = {
    "empty": "",
    "secp256k1": _secp256k1_peer_id(),
    "sha256 multihash": _sha256_peer_id(),
    "not base58": "0OIl" + GOOD_ID[4:],
    "punctuation": "12D3KooW-" + GOOD_ID[9:],
    "non-ascii": GOOD_ID[:-1] + "é",
    "truncated": GOOD_ID[:-1],
    "extended": GOOD_ID + "1",
    "leading zero": "1" + GOOD_ID,
    "rsa key type": _b58(b"\x00\x24\x08\x00\x12\x20" + KEY),
    "secp key type": _b58(b"\x00\x24\x08\x02\x12\x20" + KEY),
    "ecdsa key type": _b58(b"\x00\x24\x08\x03\x12\x20" + KEY),
    "short key": _b58(b"\x00\x23\x08\x01\x12\x1f" + KEY[:31]),
    "long key": _b58(b"\x00\x25\x08\x01\x12\x21" + KEY + b"\x00"),
    "wrong digest length": _b58(b"\x00\x20\x08\x01\x12\x20" + KEY),
    "sha256 code": _b58(b"\x12\x24\x08\x01\x12\x20" + KEY),
    "bare key": _b58(KEY),
}


@pytest.mark.parametrize("name", sorted(NOT_ED25519))
def test_public_key_of_peer_id_refuses_others(name: str) -> None:
    with pytest.raises(ValueError):
        public_key_of_peer_id(NOT_ED25519[name])


@given(text=st.text(max_size=60))
def test_public_key_of_peer_id_accepts_only_canonical_ids(text: str) -> None:
    try:
        key = public_key_of_peer_id(text)
    except ValueError:
        return
    assert peer_id_of(key) == text


@given(raw=st.binary(max_size=45))
def test_public_key_of_peer_id_on_arbitrary_bytes(raw: bytes) -> None:
    text = _b58(raw)
    try:
        key = public_key_of_peer_id(text)
    except ValueError:
        assert not (len(raw) == 38 and raw.startswith(ED_PREFIX))
        return
    assert raw == ED_PREFIX + key


def test_mesh_id() -> None:
    a, b = seeded_identity(1).public_key, seeded_identity(2).public_key
    assert mesh_id_of(a) == mesh_id_of(a)
    assert mesh_id_of(a) != mesh_id_of(b)
    assert len(mesh_id_of(a)) == 32
    assert mesh_id_of(a) != hashlib.sha256(a).digest()  # domain separated
    with pytest.raises(ValueError):
        mesh_id_of(a[:31])


# --- signatures -------------------------------------------------------------------------

SIGNER = seeded_identity(11)
MESSAGE = b"agentmesh test message"
SIGNATURE = SIGNER.sign(MESSAGE)


def test_sign_and_verify() -> None:
    assert len(SIGNATURE) == SIGNATURE_BYTES
    verify(SIGNER.public_key, MESSAGE, SIGNATURE)
    with pytest.raises(BadSignature):
        verify(seeded_identity(12).public_key, MESSAGE, SIGNATURE)


@pytest.mark.parametrize("bit", range(SIGNATURE_BYTES * 8))
def test_verify_refuses_any_signature_bit_flip(bit: int) -> None:
    with pytest.raises(BadSignature):
        verify(SIGNER.public_key, MESSAGE, flip(SIGNATURE, bit))


def test_verify_refuses_any_key_bit_flip() -> None:
    for bit in range(PUBLIC_KEY_BYTES * 8):
        with pytest.raises(BadSignature):
            verify(flip(SIGNER.public_key, bit), MESSAGE, SIGNATURE)


def test_verify_refuses_any_message_bit_flip() -> None:
    for bit in range(len(MESSAGE) * 8):
        with pytest.raises(BadSignature):
            verify(SIGNER.public_key, flip(MESSAGE, bit), SIGNATURE)


@given(seed=seeds, message=st.binary(min_size=1, max_size=256), data=st.data())
def test_verify_refuses_single_bit_flips(seed: bytes, message: bytes, data: st.DataObject) -> None:
    identity = Identity.from_seed(seed)
    signature = identity.sign(message)
    verify(identity.public_key, message, signature)
    part = data.draw(st.sampled_from(["message", "signature", "key"]))
    key, msg, sig = identity.public_key, message, signature
    if part == "message":
        msg = flip(msg, data.draw(st.integers(0, len(msg) * 8 - 1)))
    elif part == "signature":
        sig = flip(sig, data.draw(st.integers(0, SIGNATURE_BYTES * 8 - 1)))
    else:
        key = flip(key, data.draw(st.integers(0, PUBLIC_KEY_BYTES * 8 - 1)))
    with pytest.raises(BadSignature):
        verify(key, msg, sig)


@pytest.mark.parametrize(
    ("key", "signature"),
    [
        (SIGNER.public_key[:31], SIGNATURE),
        (SIGNER.public_key + b"\x00", SIGNATURE),
        (SIGNER.public_key, SIGNATURE[:63]),
        (SIGNER.public_key, SIGNATURE + b"\x00"),
        (b"", b""),
        (b"\xff" * 32, SIGNATURE),  # not a curve point
        (bytes(32), SIGNATURE),  # small-order point
        (SIGNER.public_key, bytes(64)),
    ],
)
def test_verify_refuses_bad_lengths_and_points(key: bytes, signature: bytes) -> None:
    with pytest.raises(BadSignature):
        verify(key, MESSAGE, signature)


# --- import cost -----------------------------------------------------------------------


def test_local_state_modules_do_not_import_libp2p() -> None:
    code = (
        "import sys\n"
        "import mesh.identity, mesh.membership.state, crdt_state.replica\n"
        "import crdt_state.storage.sqlite\n"
        "loaded = sorted(m for m in sys.modules if m == 'libp2p' or m.startswith('libp2p.'))\n"
        "print(repr(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"

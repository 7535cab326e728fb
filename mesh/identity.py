"""Ed25519 node identities, their libp2p PeerIds, and key files.

This module must stay cheap to import: it never imports libp2p. The PeerId is
derived here exactly as libp2p does (identity multihash of the protobuf-encoded
public key), and a test checks it against py-libp2p.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import base58
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from mesh.errors import BadSignature, KeyFileError

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
KEY_FILE_HEADER = "agentmesh-ed25519-secret-v1"
_MESH_ID_DOMAIN = b"agentmesh/mesh-id/v1\x00"

# libp2p PublicKey protobuf: field 1 (KeyType) = 1 (Ed25519); field 2 (Data) = 32 bytes.
_PROTOBUF_ED25519_PREFIX = b"\x08\x01\x12\x20"
# multihash "identity" code 0x00, digest length 36.
_IDENTITY_MULTIHASH_PREFIX = b"\x00\x24"


def peer_id_of(public_key: bytes) -> str:
    """The libp2p PeerId (base58btc) of an Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError("an Ed25519 public key is 32 bytes")
    encoded: bytes = base58.b58encode(
        _IDENTITY_MULTIHASH_PREFIX + _PROTOBUF_ED25519_PREFIX + public_key
    )
    return encoded.decode("ascii")


def public_key_of_peer_id(peer_id: str) -> bytes:
    """The Ed25519 public key inside a PeerId; raises ValueError for any other PeerId."""
    try:
        raw: bytes = base58.b58decode(peer_id)
    except ValueError as exc:
        raise ValueError(f"not a base58 PeerId: {peer_id!r}") from exc
    prefix = _IDENTITY_MULTIHASH_PREFIX + _PROTOBUF_ED25519_PREFIX
    if len(raw) != len(prefix) + PUBLIC_KEY_BYTES or not raw.startswith(prefix):
        raise ValueError(f"not an Ed25519 PeerId: {peer_id!r}")
    return raw[len(prefix) :]


def mesh_id_of(root_public_key: bytes) -> bytes:
    """The mesh id: SHA-256 over a domain prefix and the root public key."""
    if len(root_public_key) != PUBLIC_KEY_BYTES:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return hashlib.sha256(_MESH_ID_DOMAIN + root_public_key).digest()


def verify(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Check an Ed25519 signature; raise BadSignature if it does not verify."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        raise BadSignature("wrong key or signature length")
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError) as exc:
        raise BadSignature("signature does not verify") from exc


@dataclass(frozen=True)
class Identity:
    """A node's Ed25519 key pair."""

    signing_key: SigningKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(SigningKey(seed))

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def peer_id(self) -> str:
        return peer_id_of(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self.signing_key.sign(message).signature)

    def save(self, path: Path) -> None:
        """Write the key to ``path`` with mode 0600, refusing to overwrite."""
        text = f"{KEY_FILE_HEADER} {base64.b64encode(self.seed).decode('ascii')}\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise KeyFileError(f"{path}: key file exists; refusing to overwrite it") from exc
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    @classmethod
    def load(cls, path: Path) -> Identity:
        """Read a key file, refusing one that group or others can read."""
        try:
            info = path.stat()
        except FileNotFoundError as exc:
            raise KeyFileError(f"{path}: no key file") from exc
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{path}: key file is accessible by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
            )
        try:
            text = path.read_text(encoding="ascii")
        except OSError as exc:  # a directory, unreadable, vanished since the stat
            raise KeyFileError(f"{path}: cannot read key file ({exc})") from exc
        except UnicodeDecodeError as exc:
            raise KeyFileError(f"{path}: not an agentmesh key file ({exc})") from exc
        try:
            header, _, body = text.strip().partition(" ")
            if header != KEY_FILE_HEADER:
                raise ValueError("unknown header")
            seed = base64.b64decode(body, validate=True)
            return cls.from_seed(seed)
        except (ValueError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"{path}: not an agentmesh key file ({exc})") from exc

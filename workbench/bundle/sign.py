"""Signing bundles: ``workbench keygen OUT`` makes an Ed25519 key pair, ``workbench export --sign OUT``
writes ``manifest.sig``, and the harness checks it with ``--trust OUT.pub`` (``serving_harness.bundle.trust``).

Keys are PEM files that OpenSSL reads and writes too: ``openssl genpkey -algorithm ed25519 -out KEY``
and ``openssl pkey -in KEY -pubout -out KEY.pub`` make a pair ``export --sign`` and ``--trust`` accept.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from serving_harness.bundle import MANIFEST_FILE, SIGNATURE_FILE, BundleSignature, key_id
from workbench.errors import UsageError

__all__ = ["KeyPair", "generate_key_pair", "load_signing_key", "sign_bundle", "signing_key_id"]

PUBLIC_SUFFIX = ".pub"


@dataclass(frozen=True)
class KeyPair:
    """Where ``generate_key_pair`` wrote the private and public key, and the key's id."""

    private: Path
    public: Path
    key_id: str


def generate_key_pair(out: Path) -> KeyPair:
    """Write a new Ed25519 private key to ``out`` (mode 0600) and its public key to ``out.pub``."""
    public_path = out.with_name(out.name + PUBLIC_SUFFIX)
    for path in (out, public_path):
        if path.exists():
            raise UsageError(f"{path} exists: keys are never overwritten, give another path")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # private from the first byte
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private_pem)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return KeyPair(out, public_path, signing_key_id(key))


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The unencrypted PEM Ed25519 private key in ``path``; UsageError saying what is wrong otherwise."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"--sign {path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"--sign {path}: an Ed25519 key is needed (workbench keygen), got {type(key).__name__}")
    return key


def sign_bundle(directory: Path, key: Ed25519PrivateKey) -> str:
    """Write ``manifest.sig`` (a detached signature over manifest.json's bytes); return the key id."""
    manifest = (directory / MANIFEST_FILE).read_bytes()
    signature = BundleSignature(key_id=signing_key_id(key), signature=base64.b64encode(key.sign(manifest)).decode())
    (directory / SIGNATURE_FILE).write_text(signature.model_dump_json(indent=2) + "\n")
    return signature.key_id


def signing_key_id(key: Ed25519PrivateKey) -> str:
    """The id of ``key``'s public half (what ``--trust`` and manifest.sig name)."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key_id(raw)

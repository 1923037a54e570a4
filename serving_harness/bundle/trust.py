"""Who may vouch for a bundle: a detached Ed25519 signature over ``manifest.json``, and a harness outside it.

``manifest.sig`` (written by ``workbench export --sign KEY``) is JSON::

    {"format": "bundle-signature/1", "algorithm": "ed25519", "key_id": "<sha256 of the public key>",
     "signature": "<base64 of the 64-byte signature over manifest.json's exact bytes>"}

The manifest pins every other file by sha256, so the signature covers the whole bundle. ``--trust
PUBKEY`` (a PEM public key: ``openssl pkey -pubout`` or ``workbench keygen``) refuses a bundle that is
unsigned, signed by another key, or whose manifest changed after signing. Ed25519 comes from
``cryptography`` (one wheel, no network): OpenSSF ``model-signing`` was considered and not taken, since it
pulls in Sigstore and needs pyOpenSSL without declaring it, which the slim serving image should not carry.

The checks only mean something when the code running them is not part of what is checked: a harness
whose own source lies inside the bundle (``PYTHONPATH=vendor``) refuses to judge it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

import serving_harness
from serving_harness.bundle.manifest import MANIFEST_FILE, SIGNATURE_FILE
from serving_harness.errors import BadInput, BundleError

if TYPE_CHECKING:  # imported when used: serving an unsigned bundle needs no cryptography
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "SIGNATURE_FORMAT",
    "BundleSignature",
    "check_outside_judge",
    "check_signature",
    "harness_inside",
    "key_id",
    "load_public_key",
]

SIGNATURE_FORMAT: Literal["bundle-signature/1"] = "bundle-signature/1"


class BundleSignature(BaseModel):
    """``manifest.sig``: a detached signature over manifest.json's bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["bundle-signature/1"] = SIGNATURE_FORMAT
    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str
    signature: str


def key_id(public_bytes: bytes) -> str:
    """A short name of a public key (its raw 32 bytes): the first 16 hex digits of their sha256."""
    return hashlib.sha256(public_bytes).hexdigest()[:16]


def load_public_key(path: Path) -> tuple[Ed25519PublicKey, str]:
    """The Ed25519 public key in the PEM file ``path`` and its key id; BadInput when it is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        text = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"--trust {path}: cannot read the public key ({exc.strerror})") from None
    try:
        key = serialization.load_pem_public_key(text)
    except ValueError as exc:
        raise BadInput(f"--trust {path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadInput(f"--trust {path}: an Ed25519 public key is needed, got {type(key).__name__}")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key, key_id(raw)


def check_signature(root: Path, manifest: bytes, trust: Path) -> str:
    """The trusted key's id when ``manifest`` (read from ``root``) carries its valid signature; else BundleError."""
    from cryptography.exceptions import InvalidSignature

    key, trusted = load_public_key(trust)
    signature = _read_signature(root, trusted)
    if signature.key_id != trusted:
        raise BundleError(f"{root / SIGNATURE_FILE}: signed by key {signature.key_id}, not the trusted key {trusted}")
    try:
        key.verify(_decode(root, signature.signature), manifest)
    except InvalidSignature:
        raise BundleError(
            f"{root / MANIFEST_FILE}: the signature in {SIGNATURE_FILE} does not match it (changed after signing)"
        ) from None
    return trusted


def _read_signature(root: Path, trusted: str) -> BundleSignature:
    path = root / SIGNATURE_FILE
    if path.is_symlink() or not path.is_file():
        raise BundleError(f"{path}: missing: the bundle is unsigned, and --trust asks for a signature by key {trusted}")
    try:
        return BundleSignature.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise BundleError(f"{path}: not a bundle signature ({exc.errors()[0]['msg']})") from None


def _decode(root: Path, text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{root / SIGNATURE_FILE}: the signature is not base64") from None


def harness_inside(root: Path) -> bool:
    """True when the serving_harness running now was imported from inside ``root`` (a vendored copy)."""
    here = Path(serving_harness.__file__).resolve()
    return here.is_relative_to(root.resolve())


def check_outside_judge(root: Path) -> None:
    """BundleError when the harness running the checks is the bundle's own copy: it cannot vouch for itself."""
    if harness_inside(root):
        raise BundleError(
            f"refusing bundle {root}: the harness checking it is its own copy ({Path(serving_harness.__file__).parent}); "
            "run a harness installed outside the bundle (not PYTHONPATH=vendor, not from the bundle directory)"
        )

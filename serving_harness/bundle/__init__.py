"""Bundles: a directory that serves one model version with ``python -m serving_harness serve DIR``.

::

    manifest.json          what the bundle is (format, name, semver version, source run, lineage, SLOs,
                           accuracy, input/output schema) and the sha256 of every other file
    manifest.sig           optional: a detached Ed25519 signature over manifest.json (``export --sign``)
    serving.json           ServingConfig as measured
    model/model.onnx       the artifact
    golden/                inputs.npz, outputs.npz (and fallback-outputs.npz): checked with tolerances
    drift/baseline.json    the drift baseline (serving_harness.drift)
    fallback/              optional: the baseline variant's artifact and serving.json
    requirements.txt       the serving dependencies, pinned
    vendor/serving_harness the measured server's source: data, hashed like every other file
    monitoring/ deploy/ Dockerfile README.md

The trust boundary, one rule per module:

- **One way in** (``load``): a directory with a manifest.json is a bundle and is loaded only through
  ``load_bundle``; a manifest that is not a complete, known format version is refused, never read as a
  plain model directory.
- **Data, never code** (``manifest``): artifact formats from an allowlist, serving.json's runtime must
  be one the format allows, nothing in a bundle names a callable. Nothing is unpickled: the manifest,
  settings and baseline are JSON, golden tensors ``.npz`` read with ``allow_pickle=False``.
- **Closed file set** (``manifest``, ``load``): every manifest path relative, normalised and inside; no
  symbolic link; a file present but not listed is refused, ``__pycache__`` included.
- **Signatures and the judge** (``trust``): ``--trust PUBKEY`` needs a valid signature by that key; the
  digest (``--digest``, printed by ``verify``) pins the manifest without one. Either needs a harness
  installed outside the bundle: its vendored copy never vouches for the bundle it ships in.

``verify_bundle`` (``verify``) also runs the golden inputs on this machine and compares the outputs
with the manifest's tolerances.
"""

from serving_harness.bundle.load import (
    FALLBACK_SUFFIX,
    LoadedBundle,
    LoadedFallback,
    _settings,  # noqa: F401  (its messages are tested on their own)
    bundle_files,
    file_problems,
    file_sha256,
    is_bundle,
    load_bundle,
)
from serving_harness.bundle.manifest import (
    ARTIFACT_RUNTIMES,
    BUNDLE_FORMAT,
    MANIFEST_FILE,
    SEMVER,
    SIGNATURE_FILE,
    BundleManifest,
    FallbackSpec,
    GoldenSpec,
    SloSpec,
    check_runtime,
    read_manifest,
)
from serving_harness.bundle.trust import SIGNATURE_FORMAT, BundleSignature, check_signature, key_id, load_public_key
from serving_harness.bundle.verify import Check, Verification, golden_checks, verify_bundle
from serving_harness.errors import BundleError

__all__ = [
    "ARTIFACT_RUNTIMES",
    "BUNDLE_FORMAT",
    "FALLBACK_SUFFIX",
    "MANIFEST_FILE",
    "SEMVER",
    "SIGNATURE_FILE",
    "SIGNATURE_FORMAT",
    "BundleError",
    "BundleManifest",
    "BundleSignature",
    "Check",
    "FallbackSpec",
    "GoldenSpec",
    "LoadedBundle",
    "LoadedFallback",
    "SloSpec",
    "Verification",
    "bundle_files",
    "check_runtime",
    "check_signature",
    "file_problems",
    "file_sha256",
    "golden_checks",
    "is_bundle",
    "key_id",
    "load_bundle",
    "load_public_key",
    "read_manifest",
    "verify_bundle",
]

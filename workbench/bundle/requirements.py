"""``requirements.txt`` of a bundle: the serving dependencies only, pinned to the versions installed here.

The bundle's server is the one that was measured, so its dependencies are pinned to what ran in the
lab: the harness's direct dependencies and everything they pull in (their requirements walked with
their markers evaluated for this interpreter), each ``name==installed version``. Nothing of the lab
(torch, onnx, locust, pandas...) is listed.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from workbench.errors import MissingDependencyError

__all__ = ["SERVING_REQUIREMENTS", "pinned_requirements", "requirements_text"]

# What serving_harness imports to serve an ONNX bundle (pyproject's "serving_harness" dependency block,
# without uvicorn's [standard] extras beyond the two the server uses: uvloop and httptools).
SERVING_REQUIREMENTS = (
    "numpy",
    "onnxruntime",
    "starlette",
    "uvicorn",
    "uvloop; sys_platform != 'win32'",
    "httptools",
    "orjson",
    "prometheus-client",
    "pydantic",
    "cryptography",  # bundle signatures: serve|verify --trust
    "grpcio",  # OIP v2 over gRPC (--grpc-port)
    "protobuf",
)


def pinned_requirements(roots: tuple[str, ...] = SERVING_REQUIREMENTS) -> dict[str, str]:
    """Canonical name -> installed version of ``roots`` and their transitive requirements."""
    pins: dict[str, str] = {}
    pending = [(Requirement(text), frozenset[str]()) for text in roots]
    while pending:
        requirement, extras = pending.pop()
        if not _applies(requirement, extras):
            continue
        name = canonicalize_name(requirement.name)
        try:
            found = distribution(name)
        except PackageNotFoundError:
            raise MissingDependencyError(f"{name} is needed to serve a bundle and is not installed here") from None
        if name in pins:
            continue
        pins[name] = found.version
        asked = frozenset(requirement.extras)
        pending += [(Requirement(text), asked) for text in found.requires or ()]
    return dict(sorted(pins.items()))


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    if requirement.marker is None:
        return True
    marker = requirement.marker
    # an extra's requirements count only when that extra was asked for; "" is "no extra"
    return any(marker.evaluate({"extra": extra}) for extra in {"", *extras})


def requirements_text(pins: dict[str, str]) -> str:
    """The file: a header line, then ``name==version`` per line."""
    lines = ["# serving_harness runtime dependencies, pinned to the versions the bundle was measured with"]
    return "\n".join([*lines, *(f"{name}=={version}" for name, version in pins.items())]) + "\n"

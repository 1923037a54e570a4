"""Regenerate the stubs beside this file from the ``.proto`` files (a developer's tool; needs grpcio-tools).

Run from the repository root, in a separate venv with ``pip install "grpcio-tools==1.66.*"``:
``python serving_harness/protocol/grpc_gen/regenerate.py``. The stubs
are committed, generated with grpcio-tools 1.66 (protobuf gencode 5.27: they load on any protobuf
runtime from 5.27 on). Each ``_pb2`` module registers its messages in a descriptor pool of its own,
not protobuf's default one: a client library that registers the same published names
(tritonclient's ``inference.*``, grpcio-health-checking's ``grpc.health.v1.*``) can then be imported
in the same process without a "duplicate symbol" error.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
OWN_POOL = "_descriptor_pool.DescriptorPool().AddSerializedFile("


def main() -> int:
    protos = sorted(str(p.relative_to(ROOT)) for p in HERE.glob("*.proto"))
    status = protoc.main(
        ["protoc", f"-I{ROOT}", f"--python_out={ROOT}", f"--pyi_out={ROOT}", f"--grpc_python_out={ROOT}", *protos]
    )
    if status != 0:
        return int(status)
    for module in HERE.glob("*_pb2.py"):
        text = module.read_text()
        if DEFAULT_POOL not in text:
            sys.stderr.write(f"{module.name}: the generated code changed shape; check its descriptor pool\n")
            return 1
        module.write_text(text.replace(DEFAULT_POOL, OWN_POOL))
    return 0


if __name__ == "__main__":
    sys.exit(main())

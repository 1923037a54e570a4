"""``python -m serving_harness serve``: serve one model over the Open Inference Protocol v2.

    python -m serving_harness serve --model model.onnx --name digits --port 8000 \\
        --max-batch-size 32 --max-queue-delay-us 500 --instances 2 --threads 1
    python -m serving_harness serve MODEL_DIR           # model.onnx (or model.json) + serving.json
    python -m serving_harness serve --model m.onnx --port 0 --settings-json '{"instances": 2}'
    python -m serving_harness serve BUNDLE_DIR [--verify] [--digest SHA256]
    python -m serving_harness serve --canary STABLE_DIR CANDIDATE_DIR --weight 0.1 [--sticky-header x-user]
    python -m serving_harness verify BUNDLE_DIR         # checksums + golden outputs on this machine

A bundle (a directory whose manifest.json lists checksums) is refused, naming the file, when a file
is missing, changed or unlisted; ``--verify`` also runs its golden check before listening. Bundles
are served with the ``version`` label on every metric, their drift monitoring (``--no-drift`` turns
it off) and their fallback. ``--canary`` serves two bundles of one model behind one endpoint; roll
back with ``curl -X POST URL/v2/canary -d '{"weight": 0}'`` (or ``workbench canary URL --rollback``).

Settings, lowest to highest precedence: defaults, ``SH_*`` environment variables, the directory's
serving.json, ``--settings-json`` (a file or inline JSON), the flags. Once listening, one JSON line
``{"event": "listening", "host": ..., "port": ..., "url": ...}`` goes to stdout (port 0 picks a
free port); logs are JSON lines on stderr. Exit status: 0 after a drained shutdown, 2 for bad input
(a refused bundle included); ``verify`` exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from serving_harness.bundle import LoadedBundle, is_bundle, load_bundle, verify_bundle
from serving_harness.canary import CanarySplit
from serving_harness.config import ServingSettings
from serving_harness.model import ModelConfig
from serving_harness.model_dir import load_model_dir, runtime_for
from serving_harness.runtimes.torch import TORCH_MODEL_FILE

# flag (argparse dest) -> dotted ServingSettings field
_SETTING_FLAGS = {
    "runtime": "runtime.name",
    "threads": "runtime.intra_op_threads",
    "instances": "instances",
    "max_batch_size": "batching.max_batch_size",
    "max_queue_delay_us": "batching.max_queue_delay_us",
    "preferred_batch_sizes": "batching.preferred_batch_sizes",
    "max_queue_size": "limits.max_queue_size",
    "request_timeout_s": "limits.request_timeout_s",
    "max_body_bytes": "limits.max_body_bytes",
    "auth_token": "auth_token",
    "rate_limit_rps": "rate_limit_rps",
    "cache_size": "cache_size",
}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "verify":
        return _verify(args)
    try:
        if args.canary or _bundle_source(args):
            return _serve_bundles(args, resolve_bundles(args))
        model, settings = resolve(args)
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError, so is BundleError
        sys.stderr.write(f"serving_harness: {exc}\n")
        return 2
    from serving_harness.server import serve  # imported late: parsing errors stay fast

    serve(
        [model],
        settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        on_listening=_print_listening,
    )
    return 0


def resolve(args: argparse.Namespace) -> tuple[ModelConfig, ServingSettings]:
    """The model and settings a parsed ``serve`` command line asks for."""
    model, data = _model_and_file_settings(args)
    if args.name:
        model = dataclasses.replace(model, name=args.name)
    if args.model_version:
        model = dataclasses.replace(model, version=args.model_version)
    data = _overrides(args, data)
    runtime = data.setdefault("runtime", {})
    if "name" not in runtime and "SH_RUNTIME__NAME" not in {k.upper() for k in os.environ}:
        runtime["name"] = runtime_for(model.path)
    return model, ServingSettings(**data)


@dataclasses.dataclass(frozen=True)
class BundlePlan:
    """What ``serve BUNDLE`` or ``serve --canary A B`` will serve."""

    models: list[ModelConfig]
    settings: ServingSettings
    canary: CanarySplit | None
    bundles: list[LoadedBundle]


def resolve_bundles(args: argparse.Namespace) -> BundlePlan:
    """Load (and check) the bundle or the two canary bundles a parsed ``serve`` command line names."""
    if args.model or args.model_version or args.workers > 1:
        raise ValueError("a bundle names its own model and version and runs one worker: drop --model, "
                         "--model-version and --workers (run more replicas instead)")  # fmt: skip
    sources = args.canary or [args.source]
    bundles = [load_bundle(Path(source), digest=args.digest) for source in sources]
    if args.verify:
        for bundle in bundles:
            _require_golden(bundle)
    settings = [
        ServingSettings(**_overrides(args, b.settings.model_dump(mode="json", exclude_none=True))) for b in bundles
    ]
    models = [b.model_config(s, drift=not args.no_drift) for b, s in zip(bundles, settings, strict=True)]
    if args.name:
        models = [_renamed(m, args.name) for m in models]
    canary = _canary(args, bundles, models[0].name) if args.canary else None
    return BundlePlan(models=models, settings=settings[0], canary=canary, bundles=bundles)


def _renamed(model: ModelConfig, name: str) -> ModelConfig:
    fallback = dataclasses.replace(model.fallback, name=name) if model.fallback else None
    return dataclasses.replace(model, name=name, fallback=fallback)


def _canary(args: argparse.Namespace, bundles: list[LoadedBundle], name: str) -> CanarySplit:
    stable, candidate = bundles
    if stable.name != candidate.name:
        raise ValueError(f"a canary serves two versions of one model, got {stable.name!r} and {candidate.name!r}")
    if (stable.manifest.inputs, stable.manifest.outputs) != (candidate.manifest.inputs, candidate.manifest.outputs):
        raise ValueError(f"{candidate.path} takes or returns other tensors than {stable.path}: not a drop-in canary")
    slo = {b.version: b.manifest.slo.model_dump(mode="json") for b in bundles}
    return CanarySplit(
        name, stable=stable.version, candidate=candidate.version, weight=args.weight,
        sticky_header=args.sticky_header, slo=slo,
    )  # fmt: skip


def _require_golden(bundle: LoadedBundle) -> None:
    from serving_harness.bundle import BundleError, golden_checks

    failed = [check for check in golden_checks(bundle) if not check.ok]
    if failed:
        raise BundleError(f"refusing bundle {bundle.path}: {failed[0].name}: {failed[0].detail}")


def _overrides(args: argparse.Namespace, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with --settings-json and the setting flags applied over it."""
    if args.settings_json:
        data = _merge(data, _json_argument(args.settings_json))
    for dest, dotted in _SETTING_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            data = _merge(data, _nested(dotted, value))
    return data


def _bundle_source(args: argparse.Namespace) -> bool:
    return bool(args.source) and Path(args.source).is_dir() and is_bundle(Path(args.source))


def _serve_bundles(args: argparse.Namespace, plan: BundlePlan) -> int:
    import uvicorn

    from serving_harness.log import configure_logging
    from serving_harness.protocol.rest import create_app
    from serving_harness.server import _announce, _exit_quietly_after_signals, bind_socket, uvicorn_config

    configure_logging(args.log_level)
    app = create_app(plan.models, plan.settings, canary=plan.canary, version_label=True)
    sock = bind_socket(args.host, args.port)
    _announce(args.host, sock.getsockname()[1], _print_listening)
    with _exit_quietly_after_signals():
        uvicorn.Server(uvicorn_config(app, plan.settings, log_level=args.log_level)).run(sockets=[sock])
    return 0


def _verify(args: argparse.Namespace) -> int:
    if not Path(args.bundle).is_dir():
        sys.stderr.write(f"serving_harness: {args.bundle} is not a directory\n")
        return 2
    report = verify_bundle(args.bundle, digest=args.digest, golden=not args.no_golden)
    for check in report.checks:
        sys.stdout.write(f"{'ok' if check.ok else 'FAILED':6} {check.name}: {check.detail}\n")
    sys.stdout.write(f"{'ok' if report.ok else 'FAILED':6} bundle {report.path} (manifest sha256 {report.digest})\n")
    return 0 if report.ok else 1


def _model_and_file_settings(args: argparse.Namespace) -> tuple[ModelConfig, dict[str, Any]]:
    source = args.source or args.model
    if source is None:
        raise ValueError("give a model directory (serve DIR) or --model PATH")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir() and not (path / TORCH_MODEL_FILE).is_file():
        return load_model_dir(path)
    return ModelConfig(name=path.stem if path.is_file() else path.resolve().name, path=path), {}


def _json_argument(value: str) -> dict[str, Any]:
    text = Path(value).read_text() if not value.lstrip().startswith("{") else value
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("--settings-json must be a JSON object")
    return data


def _nested(dotted: str, value: Any) -> dict[str, Any]:
    head, _, rest = dotted.partition(".")
    return {head: _nested(rest, value) if rest else value}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _print_listening(host: str, port: int) -> None:
    line = {"event": "listening", "host": host, "port": port, "url": f"http://{host}:{port}"}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving_harness", description="Serve a model over the Open Inference Protocol v2."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve a model over OIP v2 (HTTP/REST)")
    serve.add_argument("source", nargs="?", help="a model directory (artifact + serving.json [+ manifest.json])")
    serve.add_argument("--model", help="an .onnx file or a torch artifact directory (with model.json)")
    serve.add_argument("--name", help="the model's name in URLs (default: the file or directory name)")
    serve.add_argument("--model-version", help="the model's version (default 1)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0 picks a free port (reported on stdout)")
    serve.add_argument("--workers", type=int, default=1, help="server processes on the one port")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--settings-json", help="ServingSettings as a JSON file or inline JSON")
    serve.add_argument("--runtime", choices=["onnxruntime", "torch", "tensorrt"])
    serve.add_argument("--threads", type=int, help="intra-op threads per instance")
    serve.add_argument("--instances", type=int, help="model instances (each its own runtime and thread)")
    serve.add_argument("--max-batch-size", type=int)
    serve.add_argument("--max-queue-delay-us", type=int)
    serve.add_argument("--preferred-batch-sizes", type=_sizes, help="comma-separated, e.g. 8,16")
    serve.add_argument("--max-queue-size", type=int)
    serve.add_argument("--request-timeout-s", type=float)
    serve.add_argument("--max-body-bytes", type=int)
    serve.add_argument("--auth-token", help="bearer token (prefer the SH_AUTH_TOKEN environment variable)")
    serve.add_argument("--rate-limit-rps", type=float)
    serve.add_argument("--cache-size", type=int)
    serve.add_argument("--canary", nargs=2, metavar=("STABLE", "CANDIDATE"), help="two bundles of one model")
    serve.add_argument("--weight", type=float, default=0.1, help="the candidate's share of traffic (--canary)")
    serve.add_argument("--sticky-header", help="route by a hash of this header when a request has it (--canary)")
    serve.add_argument("--verify", action="store_true", help="run the bundle's golden check before listening")
    serve.add_argument("--digest", help="the sha256 manifest.json must have (pins the whole bundle)")
    serve.add_argument("--no-drift", action="store_true", help="serve a bundle without drift monitoring")
    verify = commands.add_parser("verify", help="check a bundle: every file's sha256 and its golden outputs")
    verify.add_argument("bundle", help="a bundle directory")
    verify.add_argument("--digest", help="the sha256 manifest.json must have")
    verify.add_argument("--no-golden", action="store_true", help="checksums only")
    return parser


if __name__ == "__main__":
    sys.exit(main())

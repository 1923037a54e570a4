"""``python -m serving_harness serve``: serve one model over the Open Inference Protocol v2.

    python -m serving_harness serve --model model.onnx --name digits --port 8000 \\
        --max-batch-size 32 --max-queue-delay-us 500 --instances 2 --threads 1
    python -m serving_harness serve MODEL_DIR           # model.onnx (or model.json) + serving.json
    python -m serving_harness serve --model m.onnx --port 0 --settings-json '{"instances": 2}'
    python -m serving_harness serve BUNDLE_DIR [--verify] [--digest SHA256] [--trust PUBKEY.pem]
    python -m serving_harness serve --canary STABLE_DIR CANDIDATE_DIR --weight 0.1 [--sticky-header x-user]
    python -m serving_harness verify BUNDLE_DIR [--trust PUBKEY.pem]   # every check + golden outputs here

A directory with a manifest.json is a bundle, loaded only through ``serving_harness.bundle``'s checks
and refused, naming the reason and the file, when one fails (see that package for the trust boundary);
``--verify`` also runs its golden check before listening, ``--trust`` needs a valid signature by that
key. With ``--verify``, ``--digest`` or ``--trust`` nothing but a verified bundle is served, and the
harness must be installed outside it. Without ``--trust`` a bundle is served with a warning in the log
and ``sh_bundle_unsigned 1``. Bundles
are served with the ``version`` label on every metric, their drift monitoring (``--no-drift`` turns
it off) and their fallback. ``--canary`` serves two bundles of one model behind one endpoint; roll
back with ``curl -X POST URL/v2/canary -d '{"weight": 0}'`` (or ``workbench canary URL --rollback``).

Settings, lowest to highest precedence: defaults, ``SH_*`` environment variables, the directory's
serving.json, ``--settings-json`` (a file or inline JSON), the flags. This module is the only place
that reads ``SH_*`` variables (``settings_from_environment``): a ServingConfig built anywhere else is
exactly what its caller wrote. Once listening, one JSON line ``{"event": "listening", "host": ...,
"port": ..., "url": ...}`` goes to stdout (port 0 picks a free port); logs are JSON lines on stderr.
Exit status: 0 after a drained shutdown; a HarnessError is one line on stderr and its exit code, 2 for
bad input (a flag, an SH_* variable, a settings file, a refused bundle); ``verify`` exits 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from serving_harness.bundle import LoadedBundle, check_runtime, is_bundle, load_bundle, verify_bundle
from serving_harness.canary import CanarySplit
from serving_harness.config import ServingConfig
from serving_harness.errors import BadInput, BundleError, HarnessError, validation_message
from serving_harness.model import ModelConfig
from serving_harness.model_dir import load_model_dir, runtime_for
from serving_harness.runtimes.torch import TORCH_MODEL_FILE

# flag (argparse dest) -> dotted ServingConfig field
_SETTING_FLAGS = {
    "runtime": "runtime.name",
    "threads": "runtime.intra_op_threads",
    "instances": "instances",
    "max_batch_size": "batching.max_batch_size",
    "max_queue_delay_us": "batching.max_queue_delay_us",
    "preferred_batch_sizes": "batching.preferred_batch_sizes",
    "inline": "batching.inline",
    "max_queue_size": "limits.max_queue_size",
    "max_request_rows": "limits.max_request_rows",
    "request_timeout_s": "limits.request_timeout_s",
    "max_body_bytes": "limits.max_body_bytes",
    "header_timeout_s": "limits.header_timeout_s",
    "body_timeout_s": "limits.body_timeout_s",
    "max_connections": "limits.max_connections",
    "auth_token": "auth_token",
    "rate_limit_rps": "rate_limit_rps",
    "cache_size": "cache_size",
    "grpc_compression": "grpc_compression",
    "metrics_auth": "metrics_auth",
}


_LOG = logging.getLogger("serving_harness")
ENV_PREFIX = "SH_"
ENV_NESTED_DELIMITER = "__"  # SH_BATCHING__MAX_BATCH_SIZE=32 sets batching.max_batch_size


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it; return the exit status (a HarnessError is one line on stderr)."""
    args = _parser().parse_args(argv)
    # Modules imported from here on (the server, the runtimes) write no bytecode: a bundle's folder stays
    # exactly as shipped (and valid on a read-only mount) whichever harness serves it.
    sys.dont_write_bytecode = True
    try:
        return _run(args)
    except HarnessError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        sys.stderr.write(f"serving_harness: {message}\n")
        return exc.exit_code


def _run(args: argparse.Namespace) -> int:
    if args.command == "verify":
        return _verify(args)
    if args.canary or _bundle_source(args):
        with _as_bad_input():
            plan = resolve_bundles(args, os.environ)
        return _serve_bundles(args, plan)
    if args.verify or args.digest or args.trust:
        raise BadInput(f"--verify, --digest and --trust serve a verified bundle only: {args.source or args.model} "
                       "is not one (no manifest.json)")  # fmt: skip
    with _as_bad_input():
        model, settings = resolve(args, os.environ)
    return _serve_model(args, model, settings)


def _serve_model(args: argparse.Namespace, model: ModelConfig, settings: ServingConfig) -> int:
    from serving_harness.server import pick_port, serve  # imported late: parsing errors stay fast

    grpc_port = None if args.grpc_port is None else pick_port(args.host, args.grpc_port)
    serve(
        [model],
        settings,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        on_listening=lambda host, port: _print_listening(host, port, grpc_port),
        grpc_port=grpc_port,
    )
    return 0


@contextlib.contextmanager
def _as_bad_input() -> Iterator[None]:
    """What the operator gave (a path, JSON, a setting) failing to load is bad input: BadInput, exit 2."""
    try:
        yield
    except HarnessError:
        raise
    except ValidationError as exc:
        raise BadInput(f"serving settings: {validation_message(exc)}") from exc
    except (ValueError, OSError) as exc:
        raise BadInput(str(exc)) from exc


def settings_from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ServingConfig fields the ``SH_*`` variables in ``environ`` set, as nested data.

    ``SH_AUTH_TOKEN=t`` sets ``auth_token``; ``SH_BATCHING__MAX_BATCH_SIZE=32`` sets a nested field;
    tuples and whole sections take JSON (``SH_RUNTIME__EXECUTION_PROVIDERS='["CPUExecutionProvider"]'``).
    Names are case-insensitive. An ``SH_`` variable that names no field is BadInput: a misspelt
    ``SH_AUTH_TOKEN`` must not leave a server open.
    """
    data: dict[str, Any] = {}
    for variable, value in sorted(environ.items()):
        if not variable.upper().startswith(ENV_PREFIX):
            continue
        path = variable[len(ENV_PREFIX) :].lower().split(ENV_NESTED_DELIMITER)
        field = _setting_field(path)
        if field is None:
            raise BadInput(f"{variable} names no serving setting (see python -m serving_harness serve --help)")
        data = _merge(data, _nested(".".join(path), _environment_value(variable, value, field.annotation)))
    return data


def _setting_field(path: list[str]) -> FieldInfo | None:
    """The ServingConfig field at ``path`` (``["batching", "max_batch_size"]``); None when there is none."""
    model: type[BaseModel] = ServingConfig
    *sections, name = path
    for section in sections:
        annotation = model.model_fields[section].annotation if section in model.model_fields else None
        if not _is_section(annotation):
            return None
        model = annotation
    return model.model_fields.get(name)


def _is_section(annotation: Any) -> typing.TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _environment_value(variable: str, value: str, annotation: Any) -> Any:
    """A section or a tuple is JSON; a scalar stays a string for pydantic to convert (and check)."""
    if not (_is_section(annotation) or typing.get_origin(annotation) is tuple):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise BadInput(f"{variable} must be JSON here: {exc}") from None


def _environment_variables() -> list[tuple[str, str]]:
    """Every SH_* variable ``serve`` reads, with its field's description, for ``serve --help``."""
    found: list[tuple[str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if _is_section(field.annotation):
                walk(field.annotation, f"{prefix}{name.upper()}{ENV_NESTED_DELIMITER}")
            else:
                found.append((f"{prefix}{name.upper()}", field.description or ""))

    walk(ServingConfig, ENV_PREFIX)
    return found


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> tuple[ModelConfig, ServingConfig]:
    """The model and settings a parsed ``serve`` command line asks for (``environ``: the SH_* variables to apply)."""
    model, file_data = _model_and_file_settings(args)
    if args.name:
        model = dataclasses.replace(model, name=args.name)
    if args.model_version:
        model = dataclasses.replace(model, version=args.model_version)
    data = _overrides(args, _merge(settings_from_environment(environ or {}), file_data))
    runtime = data.setdefault("runtime", {})
    if "name" not in runtime:
        runtime["name"] = runtime_for(model.path)
    return model, ServingConfig(**data)


@dataclasses.dataclass(frozen=True)
class BundlePlan:
    """What ``serve BUNDLE`` or ``serve --canary A B`` will serve."""

    models: list[ModelConfig]
    settings: ServingConfig
    canary: CanarySplit | None
    bundles: list[LoadedBundle]


def resolve_bundles(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> BundlePlan:
    """Load (and check) the bundle or the two canary bundles a parsed ``serve`` command line names.

    ``environ``'s SH_* variables apply under each bundle's serving.json (a deployment's SH_AUTH_TOKEN).
    """
    if args.model or args.model_version or args.workers > 1:
        raise BadInput("a bundle names its own model and version and runs one worker: drop --model, "
                         "--model-version and --workers (run more replicas instead)")  # fmt: skip
    sources = args.canary or [args.source]
    bundles = [load_bundle(Path(source), digest=args.digest, trust=args.trust) for source in sources]
    if args.verify:
        for bundle in bundles:
            _require_golden(bundle)
    environment = settings_from_environment(environ or {})
    settings = [ServingConfig(**_overrides(args, _merge(environment, _as_written(b.settings)))) for b in bundles]
    for bundle, own in zip(bundles, settings, strict=True):  # a flag or SH_RUNTIME__NAME may not change the runtime
        check_runtime(own, bundle.manifest.artifact_format, f"{bundle.path} with these settings")
    models = [b.model_config(s, drift=not args.no_drift) for b, s in zip(bundles, settings, strict=True)]
    if args.name:
        models = [_renamed(m, args.name) for m in models]
    canary = _canary(args, bundles, models[0].name) if args.canary else None
    return BundlePlan(models=models, settings=settings[0], canary=canary, bundles=bundles)


def _as_written(settings: ServingConfig) -> dict[str, Any]:
    """The fields serving.json set: a null or a field it left out leaves room for an SH_* variable."""
    return settings.model_dump(mode="json", exclude_unset=True, exclude_none=True)


def _renamed(model: ModelConfig, name: str) -> ModelConfig:
    fallback = dataclasses.replace(model.fallback, name=name) if model.fallback else None
    return dataclasses.replace(model, name=name, fallback=fallback)


def _canary(args: argparse.Namespace, bundles: list[LoadedBundle], name: str) -> CanarySplit:
    stable, candidate = bundles
    if stable.name != candidate.name:
        raise BadInput(f"a canary serves two versions of one model, got {stable.name!r} and {candidate.name!r}")
    if (stable.manifest.inputs, stable.manifest.outputs) != (candidate.manifest.inputs, candidate.manifest.outputs):
        raise BadInput(f"{candidate.path} takes or returns other tensors than {stable.path}: not a drop-in canary")
    slo = {b.version: b.manifest.slo.model_dump(mode="json") for b in bundles}
    return CanarySplit(
        name, stable=stable.version, candidate=candidate.version, weight=args.weight,
        sticky_header=args.sticky_header, slo=slo,
    )  # fmt: skip


def _require_golden(bundle: LoadedBundle) -> None:
    from serving_harness.bundle import golden_checks
    from serving_harness.bundle.trust import check_outside_judge

    check_outside_judge(bundle.path)
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
    """A directory with a manifest.json is a bundle, whatever the manifest holds: one way in."""
    return bool(args.source) and Path(args.source).is_dir() and is_bundle(Path(args.source))


def _serve_bundles(args: argparse.Namespace, plan: BundlePlan) -> int:
    import uvicorn

    from serving_harness.log import configure_logging
    from serving_harness.protocol.grpc_service import GrpcListener
    from serving_harness.protocol.rest import create_app
    from serving_harness.server import _announce, _exit_quietly_after_signals, bind_socket, pick_port, uvicorn_config

    configure_logging(args.log_level)
    _warn_unsigned(plan.bundles)
    grpc_port = None if args.grpc_port is None else pick_port(args.host, args.grpc_port)
    grpc = None if grpc_port is None else GrpcListener(host=args.host, port=grpc_port)
    app = create_app(plan.models, plan.settings, canary=plan.canary, version_label=True, grpc=grpc)
    sock = bind_socket(args.host, args.port)
    _announce(args.host, sock.getsockname()[1], lambda host, port: _print_listening(host, port, grpc_port))
    with _exit_quietly_after_signals():
        config = uvicorn_config(app, plan.settings, grpc=grpc is not None, log_level=args.log_level)
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def _warn_unsigned(bundles: list[LoadedBundle]) -> None:
    for bundle in bundles:
        if bundle.signed_by is None:
            _LOG.warning(
                "bundle %s %s is served without a verified signature (no --trust): sh_bundle_unsigned 1",
                bundle.name, bundle.version,
            )  # fmt: skip


def _verify(args: argparse.Namespace) -> int:
    if not Path(args.bundle).is_dir():
        raise BadInput(f"{args.bundle} is not a directory")
    report = verify_bundle(args.bundle, digest=args.digest, trust=args.trust, golden=not args.no_golden)
    for check in report.checks:
        sys.stdout.write(f"{'ok' if check.ok else 'FAILED':6} {check.name}: {check.detail}\n")
    signed = f"signed by trusted key {report.signed_by}" if report.signed_by else "signature not checked: no --trust"
    verdict = "ok" if report.ok else "FAILED"
    sys.stdout.write(f"{verdict:6} bundle {report.path} (manifest sha256 {report.digest}; {signed})\n")
    return 0 if report.ok else 1


def _model_and_file_settings(args: argparse.Namespace) -> tuple[ModelConfig, dict[str, Any]]:
    source = args.source or args.model
    if source is None:
        raise BadInput("give a model directory (serve DIR) or --model PATH")
    path = Path(source)
    if not path.exists():
        raise BadInput(f"{path} does not exist")
    if path.is_dir() and not (path / TORCH_MODEL_FILE).is_file():
        return load_model_dir(path)
    return ModelConfig(name=path.stem if path.is_file() else path.resolve().name, path=path), {}


def _json_argument(value: str) -> dict[str, Any]:
    try:
        text = Path(value).read_text() if not value.lstrip().startswith("{") else value
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise BadInput(f"--settings-json: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput("--settings-json must be a JSON object")
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


def _print_listening(host: str, port: int, grpc_port: int | None = None) -> None:
    line: dict[str, Any] = {"event": "listening", "host": host, "port": port, "url": f"http://{host}:{port}"}
    if grpc_port is not None:
        line["grpc_port"] = grpc_port
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def _sizes(text: str) -> tuple[int, ...]:
    """``--preferred-batch-sizes 8,16``: positive integers."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 8,16, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected batch sizes of at least 1, got {text!r}")
    return sizes


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``low..high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            expected = f"{low}..{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


def _share(text: str) -> float:
    """``--weight``: a share of traffic in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a share of traffic in [0, 1], got {text!r}")
    return value


def _setting(dotted: str) -> Callable[[str], Any]:
    """An argparse type that checks a flag as the ServingConfig field ``dotted`` does: one source of bounds."""
    field = _setting_field(dotted.split("."))
    assert field is not None, f"{dotted} is not a ServingConfig field"  # a typo in _add_setting_flags
    checked: Any = (
        typing.cast(Any, Annotated)[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    )
    adapter: TypeAdapter[Any] = TypeAdapter(checked)

    def parse(text: str) -> Any:
        try:
            return adapter.validate_python(text)
        except ValidationError as exc:
            raise argparse.ArgumentTypeError(f"{exc.errors()[0]['msg']}, got {text!r}") from None

    return parse


PORT = _integer(0, 65535)  # 0: any free port, reported on stdout


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving_harness", description="Serve a model over the Open Inference Protocol v2."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a model over OIP v2 (HTTP/REST)",
        epilog=_environment_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("source", nargs="?", help="a model directory (artifact + serving.json [+ manifest.json])")
    serve.add_argument("--model", help="an .onnx file or a torch artifact directory (with model.json)")
    serve.add_argument("--name", help="the model's name in URLs (default: the file or directory name)")
    serve.add_argument("--model-version", help="the model's version (default 1)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=PORT, default=8000, help="0..65535; 0 picks a free port (reported on stdout)")
    serve.add_argument(
        "--grpc-port", type=PORT, help="also serve OIP v2 over gRPC on this port (0 picks a free one, on stdout)"
    )
    serve.add_argument("--workers", type=_integer(1), default=1, help="server processes on the one port")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--settings-json", help="ServingConfig as a JSON file or inline JSON")
    _add_setting_flags(serve)
    serve.add_argument("--canary", nargs=2, metavar=("STABLE", "CANDIDATE"), help="two bundles of one model")
    serve.add_argument("--weight", type=_share, default=0.1, help="the candidate's share of traffic (--canary)")
    serve.add_argument("--sticky-header", help="route by a hash of this header when a request has it (--canary)")
    serve.add_argument("--verify", action="store_true", help="run the bundle's golden check before listening")
    serve.add_argument("--digest", help="the sha256 manifest.json must have (pins the whole bundle)")
    serve.add_argument(
        "--trust", type=Path, metavar="PUBKEY", help="a PEM Ed25519 public key that must have signed the bundle"
    )
    serve.add_argument("--no-drift", action="store_true", help="serve a bundle without drift monitoring")
    verify = commands.add_parser("verify", help="check a bundle: every file's sha256 and its golden outputs")
    verify.add_argument("bundle", help="a bundle directory")
    verify.add_argument("--digest", help="the sha256 manifest.json must have")
    verify.add_argument(
        "--trust", type=Path, metavar="PUBKEY", help="a PEM Ed25519 public key that must have signed it"
    )
    verify.add_argument("--no-golden", action="store_true", help="checksums only")
    return parser


def _add_setting_flags(serve: argparse.ArgumentParser) -> None:
    """The flags that set one ServingConfig field each (see _SETTING_FLAGS), checked as the field is."""
    serve.add_argument("--runtime", choices=["onnxruntime", "torch", "tensorrt"])
    serve.add_argument("--threads", type=_setting("runtime.intra_op_threads"), help="intra-op threads per instance")
    serve.add_argument("--instances", type=_setting("instances"), help="model instances (each its own runtime)")
    serve.add_argument("--max-batch-size", type=_setting("batching.max_batch_size"))
    serve.add_argument("--max-queue-delay-us", type=_setting("batching.max_queue_delay_us"))
    serve.add_argument("--preferred-batch-sizes", type=_sizes, help="comma-separated, e.g. 8,16")
    serve.add_argument(
        "--inline", action="store_true", default=None, help="run a fast model on the event loop (batch 1, 1 instance)"
    )
    serve.add_argument("--max-queue-size", type=_setting("limits.max_queue_size"))
    serve.add_argument(
        "--max-request-rows", type=_setting("limits.max_request_rows"), help="rows one request may carry (413 above)"
    )
    serve.add_argument("--request-timeout-s", type=_setting("limits.request_timeout_s"))
    serve.add_argument("--max-body-bytes", type=_setting("limits.max_body_bytes"))
    serve.add_argument(
        "--header-timeout-s", type=_setting("limits.header_timeout_s"), help="close a connection slower to send headers"
    )
    serve.add_argument("--body-timeout-s", type=_setting("limits.body_timeout_s"), help="408 for a slower body")
    serve.add_argument("--max-connections", type=_setting("limits.max_connections"), help="open connections at most")
    serve.add_argument("--auth-token", help="bearer token (prefer the SH_AUTH_TOKEN environment variable)")
    serve.add_argument("--rate-limit-rps", type=_setting("rate_limit_rps"))
    serve.add_argument("--cache-size", type=_setting("cache_size"))
    serve.add_argument(
        "--grpc-compression", choices=["none", "gzip", "deflate"], help="compress gRPC answers of 1 KiB or more"
    )
    serve.add_argument(
        "--metrics-auth", action="store_true", default=None, help="/metrics needs the bearer token too (auth on)"
    )


def _environment_epilog() -> str:
    lines = [
        "environment: SH_<FIELD> sets a ServingConfig field and SH_<SECTION>__<FIELD> a nested one (names are",
        "case-insensitive; tuples and whole sections take JSON). They apply over the defaults and under",
        "serving.json, --settings-json and the flags; an SH_ variable that names no field is refused.",
    ]
    width = max(len(name) for name, _ in _environment_variables())
    lines += [f"  {name:<{width}}  {about}".rstrip() for name, about in _environment_variables()]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

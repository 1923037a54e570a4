"""``python -m serving_harness serve``: serve one model over the Open Inference Protocol v2.

    python -m serving_harness serve --model model.onnx --name digits --port 8000 \\
        --max-batch-size 32 --max-queue-delay-us 500 --instances 2 --threads 1
    python -m serving_harness serve MODEL_DIR           # model.onnx (or model.json) + serving.json
    python -m serving_harness serve --model m.onnx --port 0 --settings-json '{"instances": 2}'

Settings, lowest to highest precedence: defaults, ``SH_*`` environment variables, the directory's
serving.json, ``--settings-json`` (a file or inline JSON), the flags. Once listening, one JSON line
``{"event": "listening", "host": ..., "port": ..., "url": ...}`` goes to stdout (port 0 picks a
free port); logs are JSON lines on stderr. Exit status: 0 after a drained shutdown, 2 for bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from serving_harness.model import ModelConfig
from serving_harness.model_dir import load_model_dir, runtime_for
from serving_harness.runtimes.torch import TORCH_MODEL_FILE
from serving_harness.settings import ServingSettings

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
    try:
        model, settings = resolve(args)
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError
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
    if args.settings_json:
        data = _merge(data, _json_argument(args.settings_json))
    for dest, dotted in _SETTING_FLAGS.items():
        value = getattr(args, dest)
        if value is not None:
            data = _merge(data, _nested(dotted, value))
    runtime = data.setdefault("runtime", {})
    if "name" not in runtime and "SH_RUNTIME__NAME" not in {k.upper() for k in os.environ}:
        runtime["name"] = runtime_for(model.path)
    return model, ServingSettings(**data)


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
    return parser


if __name__ == "__main__":
    sys.exit(main())

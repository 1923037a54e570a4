"""The documents of the OIP extensions Triton's clients read: model configuration, statistics, repository index.

Shapes as Triton answers them, so ``tritonclient``'s ``get_model_config``,
``get_inference_statistics`` and ``get_model_repository_index`` (and tools built on them, such as
perf_analyzer and model_analyzer) read them unchanged:

- configuration (``GET /v2/models/{m}/config``): ``max_batch_size`` is ``limits.max_request_rows`` (the
  rows one request may carry; the batcher's merge cap is not a client's concern) when the model has
  a batch axis (``dims`` then leave it out) and 0 when it has none (``dims`` are the whole shape);
  ``dynamic_batching`` appears when batching is on; ``instance_group`` counts the instances (threads),
  ``KIND_GPU`` when the runtime runs on CUDA.
- statistics (``GET /v2/models/stats``, ``/v2/models/{m}/stats``): per served version, from the same
  counters ``/metrics`` exposes, both protocols together. ``inference_count`` is rows run by the
  runtime, ``execution_count`` batches run (cache hits run none). ``compute_infer`` holds the whole
  runtime call; the runtime does not time input and output copies apart, so ``compute_input`` and
  ``compute_output`` carry the count with 0 ns.
- repository index (``POST /v2/repository/index``): every served version with its state; the body
  ``{"ready": true}`` keeps the ready ones. Loading and unloading are not served: the models are fixed
  when the server starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from serving_harness.model import ServedModel
from serving_harness.runtimes.base import TensorSpec

__all__ = ["model_configuration", "model_statistics", "repository_index"]

_BACKENDS = {"onnxruntime": "onnxruntime", "torch": "pytorch", "tensorrt": "tensorrt"}
_GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider"}
_NS = 1e9


def model_configuration(model: ServedModel) -> dict[str, Any]:
    """Triton's model configuration JSON for one served version."""
    settings, schema = model.settings, model.active_schema
    batched = schema is not None and schema.batched
    metadata = schema.metadata if schema is not None else None
    doc: dict[str, Any] = {
        "name": model.config.name,
        "platform": metadata.platform if metadata is not None else "",
        "backend": _BACKENDS[settings.runtime.name],
        "version_policy": {"specific": {"versions": [model.config.version]}},
        "max_batch_size": model.max_request_rows if batched else 0,  # what one request may carry
        "input": [_tensor(t, batched) for t in (metadata.inputs if metadata else ())],
        "output": [_tensor(t, batched) for t in (metadata.outputs if metadata else ())],
        "instance_group": [{"name": model.config.name, "kind": _kind(model), "count": settings.instances}],
    }
    batching = settings.batching
    if batched and batching.max_batch_size > 1:
        doc["dynamic_batching"] = {
            "preferred_batch_size": list(batching.preferred_batch_sizes),
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
        }
    return doc


def _tensor(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    data_type = "TYPE_STRING" if spec.datatype == "BYTES" else f"TYPE_{spec.datatype}"
    return {"name": spec.name, "data_type": data_type, "dims": list(spec.shape[1:] if batched else spec.shape)}


def _kind(model: ServedModel) -> str:
    runtime = model.settings.runtime
    on_gpu = (
        runtime.name == "tensorrt"
        or (runtime.name == "torch" and runtime.device.startswith("cuda"))
        or (runtime.name == "onnxruntime" and runtime.execution_providers[:1] in {(p,) for p in _GPU_PROVIDERS})
    )
    return "KIND_GPU" if on_gpu else "KIND_CPU"


def model_statistics(models: Iterable[ServedModel]) -> dict[str, Any]:
    """Triton's statistics JSON for ``models`` (served versions)."""
    return {"model_stats": [_statistics(model) for model in models]}


def _statistics(model: ServedModel) -> dict[str, Any]:
    m = model.metrics
    executions = m.batch.count
    compute = _duration(m.compute.count, m.compute.total)
    return {
        "name": model.config.name,
        "version": model.config.version,
        "last_inference": m.last_success_ms,
        "inference_count": round(m.batch.total),
        "execution_count": executions,
        "inference_stats": {
            "success": _duration(m.succeeded.count, m.succeeded.total_s),
            "fail": _duration(m.failed.count, m.failed.total_s),
            "queue": _duration(m.queue.count, m.queue.total),
            "compute_input": _duration(m.compute.count, 0.0),
            "compute_infer": compute,
            "compute_output": _duration(m.compute.count, 0.0),
            "cache_hit": _duration(m.cache_hits, 0.0),
            "cache_miss": _duration(m.cache_misses, 0.0),
        },
        "batch_stats": [],
    }


def _duration(count: int, total_s: float) -> dict[str, int]:
    return {"count": count, "ns": round(total_s * _NS)}


def repository_index(models: Iterable[ServedModel], *, ready_only: bool = False) -> list[dict[str, str]]:
    """Triton's repository index: name, version, state and reason of each served version."""
    index = []
    for model in models:
        if ready_only and not model.serving:
            continue
        entry = {"name": model.config.name, "version": model.config.version, "state": model.state.value}
        entry["reason"] = model.reason or ""
        index.append(entry)
    return index

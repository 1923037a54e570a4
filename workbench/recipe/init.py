"""``workbench init MODEL [--data FILE]``: a starter recipe from a model's inputs and outputs.

MODEL is an ``.onnx`` file (from any converter) or a ``pkg.module:function`` torch factory. The recipe it
writes runs as written:

- pipelines that fit the format: ONNX as given (fp32), ``quantize.ort_dynamic`` (int8) and
  ``compile.ort_graph``; a torch factory goes through ``export.onnx`` first;
- data: the ``.npz`` given (arrays named like the inputs, plus ``labels``), or, without one, a file of
  random inputs written beside the recipe (enough to compare variants with the source, not to judge accuracy);
- a metric that fits the outputs: ``accuracy`` on the output that holds labels or scores when the data has
  labels (the same choice a run makes, by running the model on a few rows), else ``cosine`` against the source.

Served load is off (``load.enabled: false``); turn it on once the in-process numbers look right.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from serving_harness.runtimes.base import TensorSpec
from workbench.data.base import Arrays
from workbench.data.metrics import choose_output
from workbench.errors import UsageError
from workbench.registry import recipe_imports

__all__ = ["StarterRecipe", "starter_recipe", "write_starter_recipe"]

logger = logging.getLogger(__name__)

RANDOM_SAMPLES = 64  # rows of random inputs when no data is given: enough for a fidelity check
PROBE_ROWS = 8  # rows the model runs on to see what its outputs hold
DYNAMIC_SIZE = 16  # the size given to a dynamic non-batch axis (a sequence length) in random inputs


@dataclass(frozen=True)
class StarterRecipe:
    """The recipe mapping, and the files ``init`` wrote besides it (random inputs)."""

    recipe: dict[str, Any]
    extra_files: tuple[Path, ...] = ()


def write_starter_recipe(model: str, *, data: Path | None, out: Path, force: bool = False) -> StarterRecipe:
    """Write the starter recipe for ``model`` to ``out`` (and a random-input ``.npz`` beside it without data)."""
    if out.exists() and not force:
        raise UsageError(f"{out} exists; pass --force to overwrite it or --out to write elsewhere")
    out.parent.mkdir(parents=True, exist_ok=True)
    starter = starter_recipe(model, data=data, folder=out.parent, name=_name_of(model))
    for section in ("model", "data"):  # the loader reads them from the recipe's folder
        holder = starter.recipe[section]
        if "path" in holder:
            holder["path"] = os.path.relpath(Path(holder["path"]).expanduser().resolve(), out.parent.resolve())
    header = f"# Written by `workbench init {model}`: a starting point that runs as it is (`workbench run {out}`).\n"
    header += "# Paths are relative to this file's folder; edit freely.\n"
    out.write_text(header + yaml.safe_dump(starter.recipe, sort_keys=False))
    return starter


def starter_recipe(model: str, *, data: Path | None, folder: Path, name: str) -> StarterRecipe:
    """The recipe mapping for ``model`` (see the module docstring); random inputs go into ``folder``."""
    with recipe_imports(folder):
        source, inputs, run = _model_source(model, data)
    arrays, labels, extra = _data_arrays(inputs, data, folder, name)
    outputs = run({k: v[:PROBE_ROWS] for k, v in arrays.items()})
    probe_labels = None if labels is None else labels[:PROBE_ROWS]
    recipe: dict[str, Any] = {
        "name": name,
        "description": f"Starter recipe for {model}, written by workbench init.",
        "model": source,
        "data": {
            "source": "npz",
            "path": str(data if data is not None else extra[0]),
            "metric": _metric(outputs, probe_labels),
        },
        "search": {"strategy": "grid", "pipelines": _pipelines(source["source"])},
        "measure": {"batch_sizes": [1, 32], "trials": 3, "trial_duration_s": 0.3},
        "load": {"enabled": False},
        "constraints": {"accuracy_drop": {"max": 0.01 if labels is not None else 0.001}},
        "objective": {"maximize": "throughput_items_per_s", "batch_size": 32},
    }
    return StarterRecipe(recipe=recipe, extra_files=extra)


def _name_of(model: str) -> str:
    stem = Path(model).stem if model.endswith(".onnx") else model.rpartition(":")[2]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "model"


Runner = Callable[[Arrays], Arrays]


def _model_source(model: str, data: Path | None) -> tuple[dict[str, Any], tuple[TensorSpec, ...], Runner]:
    """The recipe's ``model`` mapping, the inputs it takes, and a function running it on some rows."""
    if model.endswith(".onnx") or Path(model).is_file():
        return _onnx_model(model)
    if ":" in model:
        return _torch_model(model, data)
    raise UsageError(f"{model!r}: expected an .onnx file or a torch factory 'pkg.module:function'")


def _onnx_model(model: str) -> tuple[dict[str, Any], tuple[TensorSpec, ...], Runner]:
    import onnx

    from serving_harness.config import RuntimeSettings
    from serving_harness.runtimes.onnxruntime import OnnxRuntime
    from workbench.models.onnx_source import check_tensors, onnx_schema, select_outputs

    path = Path(model).expanduser()
    if not path.is_file():
        raise UsageError(f"{model!r}: no such ONNX file")
    graph = onnx.load(str(path), load_external_data=False)
    source: dict[str, Any] = {"source": "onnx", "path": model}
    tensors = [o.name for o in graph.graph.output if o.type.WhichOneof("value") == "tensor_type"]
    if tensors and len(tensors) < len(graph.graph.output):  # e.g. skl2onnx's ZipMap: keep the tensor outputs
        logger.warning("%s: keeping only its tensor outputs (%s) with model.options.outputs", model, ", ".join(tensors))
        graph = select_outputs(graph, tensors, "model.options.outputs")
        source["options"] = {"outputs": tensors}
    check_tensors(graph, str(path))
    inputs, _, _ = onnx_schema(graph)
    runtime = OnnxRuntime()
    with tempfile.TemporaryDirectory(prefix="wb-init-") as scratch:
        probe = Path(scratch) / "model.onnx"
        onnx.save(graph, str(probe))
        runtime.load(probe, RuntimeSettings(name="onnxruntime"))  # the session keeps what it needs in memory
    return source, inputs, runtime.infer


def _torch_model(factory: str, data: Path | None) -> tuple[dict[str, Any], tuple[TensorSpec, ...], Runner]:
    import torch

    from workbench.registry import import_callable

    if data is None:
        raise UsageError("a torch factory needs --data: an .npz whose arrays are named like the module's inputs")
    arrays, _ = _read_npz(data)
    inputs = tuple(TensorSpec(name=k, datatype=_oip(v.dtype), shape=(-1, *v.shape[1:])) for k, v in arrays.items())
    module = import_callable(factory)().eval()

    def run(batch: Arrays) -> Arrays:
        with torch.inference_mode():
            result = module(*(torch.from_numpy(np.ascontiguousarray(v)) for v in batch.values()))
        values = list(result) if isinstance(result, tuple | list) else [result]
        names = ["output"] if len(values) == 1 else [f"output_{i}" for i in range(len(values))]
        return {n: v.numpy() for n, v in zip(names, values, strict=True)}

    source = {"source": "torch", "factory": factory, "inputs": [s.model_dump(mode="json") for s in inputs]}
    return source, inputs, run


def _oip(dtype: np.dtype[Any]) -> str:
    from serving_harness.runtimes.base import NUMPY_TO_OIP

    if dtype not in NUMPY_TO_OIP:
        raise UsageError(f"input dtype {dtype} has no OIP datatype")
    return NUMPY_TO_OIP[dtype]


def _read_npz(path: Path) -> tuple[Arrays, np.ndarray | None]:
    if not path.is_file():
        raise UsageError(f"--data {path}: no such file")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    labels = arrays.pop("labels", None)
    if not arrays:
        raise UsageError(f"--data {path}: no input arrays (name them like the model's inputs, plus 'labels')")
    return arrays, labels


def _data_arrays(
    inputs: tuple[TensorSpec, ...], data: Path | None, folder: Path, name: str
) -> tuple[Arrays, np.ndarray | None, tuple[Path, ...]]:
    """The data's arrays and labels, or random inputs written to ``folder/<name>-inputs.npz``."""
    if data is not None:
        arrays, labels = _read_npz(data)
        missing = [spec.name for spec in inputs if spec.name not in arrays]
        if missing:
            raise UsageError(f"--data {data}: no array named {', '.join(missing)} (it has {', '.join(arrays)})")
        return {spec.name: arrays[spec.name] for spec in inputs}, labels, ()
    arrays = {spec.name: _random(spec) for spec in inputs}
    path = folder / f"{name}-inputs.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return arrays, None, (path,)


def _random(spec: TensorSpec) -> np.ndarray:
    shape = (RANDOM_SAMPLES, *(DYNAMIC_SIZE if d < 0 else d for d in spec.shape[1:]))
    rng = np.random.default_rng(0)
    dtype = spec.numpy_dtype
    if np.issubdtype(dtype, np.integer):  # ids, masks: small non-negative values stay valid for most models
        return rng.integers(0, 2, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _metric(outputs: Arrays, labels: np.ndarray | None) -> str | dict[str, str]:
    if labels is None:
        output = choose_output("cosine", outputs, None)
        return {"name": "cosine", "output": output} if output else "cosine"
    output = choose_output("accuracy", outputs, labels)
    if output is None:
        raise UsageError("the data has labels but the model has no output to score them with")
    return {"name": "accuracy", "output": output}


def _pipelines(source: str) -> dict[str, list[Any]]:
    first: list[Any] = ["export.onnx"] if source == "torch" else []
    return {
        "fp32": list(first),
        "int8-dynamic": [*first, "quantize.ort_dynamic"],
        "graph-optimized": [*first, "compile.ort_graph"],
    }

"""Pruning steps on torch factory artifacts, each with an optional short fine-tune.

- ``prune.magnitude``: unstructured, global L1 (``torch.nn.utils.prune``) over Linear and Conv
  weights, made permanent. The zeros stay in dense tensors, so **dense kernels do not get faster**:
  expect the same latency (the file compresses better; sparse kernels are another matter).
- ``prune.structured``: channel pruning with ``torch-pruning``: whole output channels of Conv and
  Linear layers (and what depends on them) are removed, giving a smaller dense model that is
  cheaper to run. The layers whose outputs are the model's outputs are never pruned.

A fine-tune is a callable named in the step config, ``fine_tune: pkg.module:function`` (or
``{function: ..., epochs: 3, learning_rate: 0.001, options: {...}}``), called as
``function(module, request)`` with a :class:`FineTuneRequest`; it trains ``module`` in place.
During a magnitude fine-tune the pruning masks stay on, so pruned weights stay zero. The step knows
no model or dataset: the data comes with the callable (``workbench.examples.digits:fine_tune_digits``
trains on the digits example's training split; ``workbench.models.training.train_classifier`` helps
write one).

A structurally pruned artifact is a torch factory artifact whose factory is :func:`build_pruned`:
it builds the original architecture and resizes the pruned layers, so ``weights.pt`` stays a plain
state_dict loaded with ``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from torch import nn
from torch.nn.utils import prune as torch_prune

from serving_harness.runtimes.torch import TORCH_MODEL_FILE
from workbench.artifact import Artifact
from workbench.errors import BuildError, MissingDependencyError, UsageError
from workbench.models.torch_source import TorchModel, load_torch_model, write_torch_artifact
from workbench.registry import import_callable
from workbench.steps.base import STEPS, StepConfig, StepContext, expect_config

logger = logging.getLogger(__name__)

PRUNED_FACTORY = "workbench.steps.prune:build_pruned"
# Module attributes that record a layer's size: what build_pruned sets on a resized layer.
SIZE_ATTRIBUTES = (
    "in_features",
    "out_features",
    "in_channels",
    "out_channels",
    "groups",
    "num_features",
    "normalized_shape",
    "embedding_dim",
    "num_channels",
)
_LAYER_TYPES: dict[str, tuple[type[nn.Module], ...]] = {
    "linear": (nn.Linear,),
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d),
}
DENSE_WARNING = (
    "prune.magnitude leaves zeros in dense weight tensors: dense kernels do not get faster, so expect "
    "the same latency (use prune.structured for a smaller, faster dense model)"
)


# ------------------------------------------------------------------------------------------ fine-tune


class FineTuneConfig(StepConfig):
    """A fine-tune callable and its budget. ``options`` are passed through to the callable."""

    function: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="pkg.module:function")
    epochs: int = Field(default=3, ge=1, le=1000)
    learning_rate: float = Field(default=1e-3, gt=0)
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class FineTuneRequest:
    """What a fine-tune callable gets besides the module: its budget and the build context."""

    epochs: int
    learning_rate: float
    seed: int
    context: StepContext
    options: dict[str, Any] = field(default_factory=dict)


FineTune = Callable[[nn.Module, FineTuneRequest], object]


class _PruneConfig(StepConfig):
    fine_tune: FineTuneConfig | None = Field(default=None, description="pkg.module:function, or its settings.")

    @field_validator("fine_tune", mode="before")
    @classmethod
    def _function_shorthand(cls, value: object) -> object:
        return {"function": value} if isinstance(value, str) else value


def run_fine_tune(module: nn.Module, config: FineTuneConfig, context: StepContext) -> float:
    """Call the configured fine-tune on ``module`` (left in eval mode); return the seconds it took."""
    try:
        function: FineTune = import_callable(config.function)
    except UsageError as exc:
        raise BuildError(f"fine_tune: {exc}") from None
    request = FineTuneRequest(
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        seed=config.seed,
        context=context,
        options=dict(config.options),
    )
    started = time.perf_counter()
    module.train()
    # Dropout and random augmentations draw from torch's global RNG: seed it (and restore it after),
    # so the same config gives the same weights, as the build cache assumes.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        try:
            function(module, request)
        finally:
            module.eval()
    return round(time.perf_counter() - started, 3)


# ------------------------------------------------------------------------------------------ magnitude


class PruneMagnitudeConfig(_PruneConfig):
    """``prune.magnitude`` settings. Example::

    - prune.magnitude: {amount: 0.6, fine_tune: workbench.examples.digits:fine_tune_digits}
    """

    amount: float = Field(default=0.5, gt=0, lt=1, description="Fraction of the selected weights set to zero.")
    layers: tuple[Literal["linear", "conv"], ...] = Field(default=("linear", "conv"), min_length=1)


@STEPS.register("prune.magnitude")
class PruneMagnitude:
    """Zero the smallest weights by |w| across all selected layers at once (global L1, unstructured).

    Dense kernels do not get faster from zeros: this step changes accuracy and compressibility, not
    latency (a warning says so at build time). Figures: ``sparsity`` (zeros among the pruned layers'
    weights), ``model_sparsity`` (zeros among all parameters), ``pruned_weights``, ``fine_tune_s``.
    """

    name: ClassVar[str] = "prune.magnitude"
    Config: ClassVar[type[StepConfig]] = PruneMagnitudeConfig

    def apply(self, artifact: Artifact, config: StepConfig, workdir: Path, context: StepContext) -> Artifact:
        """Write a torch artifact directory at ``workdir`` with the same factory and pruned weights."""
        config = expect_config(self.name, config, PruneMagnitudeConfig)
        model = _load(artifact, self.name)
        logger.warning(DENSE_WARNING)
        targets = _weights_of(model.module, config.layers)
        if not targets:
            raise BuildError(f"the model has no {'/'.join(config.layers)} layers to prune")
        torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=config.amount)
        figures: dict[str, float] = {}
        if config.fine_tune:
            figures["fine_tune_s"] = run_fine_tune(model.module, config.fine_tune, context)
        for layer, name in targets:
            torch_prune.remove(layer, name)  # type: ignore[no-untyped-call]  # permanent: weight_orig * mask
        figures |= _sparsity(model.module, targets)
        _write_same_factory(artifact.path, workdir, model)
        return Artifact(path=workdir, format="torch", figures=figures)


def _weights_of(module: nn.Module, layers: tuple[str, ...]) -> list[tuple[nn.Module, str]]:
    kinds = tuple(kind for name in layers for kind in _LAYER_TYPES[name])
    return [(layer, "weight") for layer in module.modules() if isinstance(layer, kinds)]


def _sparsity(module: nn.Module, targets: list[tuple[nn.Module, str]]) -> dict[str, float]:
    weights = [getattr(layer, name).detach() for layer, name in targets]
    pruned = sum(int(w.numel()) for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    params = list(module.parameters())
    total = sum(int(p.numel()) for p in params)
    all_zeros = sum(int((p.detach() == 0).sum()) for p in params)
    return {
        "sparsity": round(zeros / pruned, 4),
        "model_sparsity": round(all_zeros / total, 4),
        "pruned_weights": float(pruned),
    }


# ----------------------------------------------------------------------------------------- structured


class PruneStructuredConfig(_PruneConfig):
    """``prune.structured`` settings. Example::

    - prune.structured: {amount: 0.5, fine_tune: {function: workbench.examples.digits:fine_tune_digits, epochs: 5}}
    """

    amount: float = Field(default=0.5, gt=0, lt=1, description="Fraction of channels removed from each layer.")
    importance: Literal["l1", "l2"] = Field(default="l2", description="Channel importance: L1 or L2 norm.")
    global_pruning: bool = Field(default=False, description="Rank channels across layers instead of per layer.")
    round_to: int | None = Field(default=None, ge=1, description="Keep channel counts a multiple of this.")
    ignored_layers: tuple[str, ...] = Field(default=(), description="Module names (named_modules) never pruned.")


@STEPS.register("prune.structured")
class PruneStructured:
    """Remove whole channels with ``torch-pruning`` (DependencyGraph keeps the model consistent).

    The model gets smaller and its dense kernels do less work. Layers that produce a model output
    are kept whole (found by running the sample batch), so the output schema does not change.
    Figures: ``params_before``, ``params_after``, ``params_ratio``, ``macs_before``, ``macs_after``,
    ``macs_ratio``, ``fine_tune_s``.
    """

    name: ClassVar[str] = "prune.structured"
    Config: ClassVar[type[StepConfig]] = PruneStructuredConfig

    def apply(self, artifact: Artifact, config: StepConfig, workdir: Path, context: StepContext) -> Artifact:
        """Write a torch artifact directory at ``workdir`` whose factory rebuilds the smaller model."""
        config = expect_config(self.name, config, PruneStructuredConfig)
        tp = _torch_pruning()
        model = _load(artifact, self.name)
        samples = _sample_tensors(model, context)
        macs_before, params_before = tp.utils.count_ops_and_params(model.module, samples)
        _prune_channels(tp, model.module, samples, config)
        _check_outputs(model, samples)
        figures: dict[str, float] = {}
        if config.fine_tune:
            figures["fine_tune_s"] = run_fine_tune(model.module, config.fine_tune, context)
        macs_after, params_after = tp.utils.count_ops_and_params(model.module, samples)
        figures |= {
            "params_before": float(params_before),
            "params_after": float(params_after),
            "params_ratio": round(params_after / params_before, 4),
            "macs_before": float(macs_before),
            "macs_after": float(macs_after),
            "macs_ratio": round(macs_after / macs_before, 4),
        }
        _write_pruned(artifact.path, workdir, model)
        return Artifact(path=workdir, format="torch", figures=figures)


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise MissingDependencyError("prune.structured needs torch-pruning: pip install torch-pruning==1.6.1") from None
    return torch_pruning


def _prune_channels(
    tp: Any, module: nn.Module, samples: tuple[torch.Tensor, ...], config: PruneStructuredConfig
) -> None:
    ignored = _output_layers(module, samples) + _named_layers(module, config.ignored_layers)
    pruner = tp.pruner.MetaPruner(
        module,
        samples,
        importance=tp.importance.MagnitudeImportance(p=1 if config.importance == "l1" else 2),
        pruning_ratio=config.amount,
        global_pruning=config.global_pruning,
        ignored_layers=ignored,
        round_to=config.round_to,
    )
    pruner.step()


def _output_layers(module: nn.Module, samples: tuple[torch.Tensor, ...]) -> list[nn.Module]:
    """Prunable layers whose output tensor is one of the model's outputs (a classifier's last Linear)."""
    produced: list[tuple[object, nn.Module]] = []  # holds the tensors, so no id is reused meanwhile

    def remember(layer: nn.Module, args: object, out: object) -> None:  # returns None: output unchanged
        produced.append((out, layer))

    kinds = tuple(kind for kinds in _LAYER_TYPES.values() for kind in kinds)
    hooks = [layer.register_forward_hook(remember) for layer in module.modules() if isinstance(layer, kinds)]
    try:
        with torch.no_grad():
            outputs = _as_list(module(*samples))
    finally:
        for hook in hooks:
            hook.remove()
    return [layer for out, layer in produced if any(out is each for each in outputs)]


def _named_layers(module: nn.Module, names: tuple[str, ...]) -> list[nn.Module]:
    modules = dict(module.named_modules())
    unknown = [name for name in names if name not in modules]
    if unknown:
        raise BuildError(f"ignored_layers names no module {', '.join(map(repr, unknown))} (see model.named_modules())")
    return [modules[name] for name in names]


def _check_outputs(model: TorchModel, samples: tuple[torch.Tensor, ...]) -> None:
    """The outputs' fixed sizes must not change (an output made through a non-layer op can be pruned)."""
    with torch.no_grad():
        values = _as_list(model.module(*samples))
    for spec, value in zip(model.outputs, values, strict=False):
        changed = any(size >= 0 and value.shape[axis] != size for axis, size in enumerate(spec.shape) if axis > 0)
        if changed:
            raise BuildError(
                f"structured pruning changed output {spec.name!r} to shape {list(value.shape)}; "
                "list the layer that makes it in ignored_layers"
            )


def _as_list(result: object) -> list[Any]:
    if isinstance(result, dict):
        return list(result.values())
    return list(result) if isinstance(result, tuple | list) else [result]


# ----------------------------------------------------------------------------- torch artifacts


def _load(artifact: Artifact, step: str) -> TorchModel:
    if artifact.format != "torch":
        raise BuildError(f"{step} prunes torch factory artifacts, not {artifact.format!r}: put it before export steps")
    return load_torch_model(artifact.path)


def _sample_tensors(model: TorchModel, context: StepContext) -> tuple[torch.Tensor, ...]:
    missing = [spec.name for spec in model.inputs if spec.name not in context.sample_inputs]
    if missing:
        raise BuildError(f"the sample inputs lack {', '.join(missing)}")
    return tuple(torch.from_numpy(np.ascontiguousarray(context.sample_inputs[s.name])) for s in model.inputs)


def _description(path: Path) -> dict[str, Any]:
    description: dict[str, Any] = json.loads((path / TORCH_MODEL_FILE).read_text())
    return description


def _base_of(description: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The original factory and kwargs (looking through an earlier structured pruning)."""
    if description["factory"] == PRUNED_FACTORY:
        return description["kwargs"]["factory"], dict(description["kwargs"]["kwargs"])
    return description["factory"], dict(description.get("kwargs", {}))


def _write_same_factory(parent: Path, workdir: Path, model: TorchModel) -> None:
    description = _description(parent)
    write_torch_artifact(
        workdir,
        factory=description["factory"],
        kwargs=description.get("kwargs", {}),
        inputs=model.inputs,
        outputs=model.outputs,
        state_dict=model.module.state_dict(),
    )


def _write_pruned(parent: Path, workdir: Path, model: TorchModel) -> None:
    factory, kwargs = _base_of(_description(parent))
    base = import_callable(factory)(**kwargs)
    layers = resized_layers(base, model.module)
    write_torch_artifact(
        workdir,
        factory=PRUNED_FACTORY,
        kwargs={"factory": factory, "kwargs": kwargs, "layers": layers},
        inputs=model.inputs,
        outputs=model.outputs,
        state_dict=model.module.state_dict(),
    )


def resized_layers(base: nn.Module, pruned: nn.Module) -> dict[str, dict[str, Any]]:
    """Per module that differs from ``base``: its tensors' new shapes and its size attributes (JSON)."""
    originals = dict(base.named_modules())
    layers: dict[str, dict[str, Any]] = {}
    for name, module in pruned.named_modules():
        original = originals[name]
        tensors = {**dict(module.named_parameters(recurse=False)), **dict(module.named_buffers(recurse=False))}
        before = {**dict(original.named_parameters(recurse=False)), **dict(original.named_buffers(recurse=False))}
        shapes = {key: list(t.shape) for key, t in tensors.items() if key in before and t.shape != before[key].shape}
        if shapes:
            attributes = {key: getattr(module, key) for key in SIZE_ATTRIBUTES if hasattr(module, key)}
            layers[name] = {"shapes": shapes, "attributes": attributes}
    return layers


def build_pruned(*, factory: str, kwargs: Mapping[str, Any], layers: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """The factory's module with the listed layers resized (empty tensors; load_state_dict fills them)."""
    module: nn.Module = import_callable(factory)(**kwargs)
    modules = dict(module.named_modules())
    for name, change in layers.items():
        layer = modules[name]
        for key, shape in change["shapes"].items():
            empty = torch.empty(tuple(shape))
            if key in layer._parameters:
                setattr(layer, key, nn.Parameter(empty))
            else:
                layer.register_buffer(key, empty.to(getattr(layer, key).dtype))
        for key, value in change["attributes"].items():
            setattr(layer, key, tuple(value) if isinstance(value, list) else value)
    return module

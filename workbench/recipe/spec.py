"""The recipe schema (pydantic v2). A recipe names a model, the data to judge it on, a space of
variants (build pipelines × serving settings), how to measure, constraints and an objective.

Build steps, serving settings and load profiles stay three separate things (after
optimum-benchmark's backend / scenario / launcher split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

from serving_harness.config import ServingConfig
from serving_harness.runtimes.base import TensorSpec
from workbench.recipe.profiles import LoadProfile


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


HFTask = Literal["sequence-classification", "feature-extraction", "token-classification"]


class ModelSpec(_Spec):
    """Where the model comes from.

    - ``source: example`` with ``name: digits | minilm``: the bundled examples.
    - ``source: torch`` with ``factory: pkg.module:function`` (and ``kwargs``, optional ``weights``
      state_dict file, ``inputs``/``outputs`` schema with -1 for dynamic axes).
    - ``source: onnx`` with ``path: model.onnx``.
    - ``source: hf`` with ``path: ./checkpoint`` (a Hugging Face ``save_pretrained`` directory) and optional
      ``task`` (read from the config's ``architectures`` when not given).
    """

    source: Literal["example", "torch", "onnx", "hf"] = "example"
    name: str | None = Field(default=None, description="Example name (digits, minilm).")
    factory: str | None = Field(default=None, description="'pkg.module:function' returning a torch.nn.Module.")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weights: str | None = Field(default=None, description="A state_dict file for the factory's module.")
    path: str | None = Field(default=None, description="An ONNX file, or a Hugging Face checkpoint directory.")
    task: HFTask | None = Field(default=None, description="Hugging Face task (default: from the config).")
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    options: dict[str, Any] = Field(default_factory=dict, description="Source options (e.g. seq_len).")

    @model_validator(mode="after")
    def _source_fields(self) -> ModelSpec:
        needed = {"example": ("name",), "torch": ("factory",), "onnx": ("path",), "hf": ("path",)}[self.source]
        missing = [key for key in needed if getattr(self, key) is None]
        if missing:
            raise ValueError(f"source '{self.source}' needs {', '.join(missing)}")
        return self


class TokenizerSpec(_Spec):
    """How ``source: text`` tokenizes: the tokenizer directory (default: the model's) and its settings."""

    path: str | None = Field(default=None, description="A tokenizer directory (default: the hf model's path).")
    max_length: int = Field(default=128, ge=1, description="Tokens per row after truncation and padding.")
    padding: Literal["max_length", "longest"] = Field(
        default="max_length", description="max_length: every row max_length tokens; longest: the longest row's."
    )
    truncation: bool = Field(default=True, description="Cut rows longer than max_length.")


class MetricSpec(_Spec):
    """A metric and the model output it reads: ``{name: accuracy, output: label}``.

    ``kind`` says what the output holds: ``labels`` (compared with the data's labels as they are) or
    ``scores`` (arg-max over the last axis first); by default integer outputs are labels, others scores.
    Without ``output`` the metric chooses one (see ``workbench.data.metrics``) and the report names it.
    """

    name: str = Field(default="accuracy", description="accuracy | cosine | 'pkg.module:function'.")
    output: str | None = Field(default=None, description="The model output to score (default: chosen by the metric).")
    kind: Literal["labels", "scores"] | None = Field(default=None, description="What the output holds.")


class DataSpec(_Spec):
    """The data variants are judged on.

    - ``source: example``: the example's own held-out split (digits test split, MiniLM sentences).
    - ``source: npz`` with ``path``: arrays named like the model inputs, plus ``labels`` if any.
    - ``source: custom`` with ``loader: pkg.module:function`` returning ``(inputs, labels)``.
    - ``source: text`` with ``path`` (CSV, JSONL or Parquet), ``text_column``, optional ``label_column`` and
      ``tokenizer`` settings: the model's token inputs (``workbench.data.text``).
    - ``source: images`` with ``path`` (a folder of image files, or an ``.npz`` of ``images`` and ``labels``),
      ``layout``, ``size``, ``mean`` and ``std``: one NCHW float32 input (``workbench.data.images``).
    """

    source: Literal["example", "npz", "custom", "text", "images"] = "example"
    name: str | None = None
    path: str | None = None
    loader: str | None = None
    limit: int | None = Field(default=None, ge=1, description="Use at most this many samples.")
    metric: str | MetricSpec = Field(
        default="accuracy",
        description="accuracy | cosine | 'pkg.module:function', or {name, output, kind} to say which output it reads.",
    )
    options: dict[str, Any] = Field(default_factory=dict)
    # source: text
    text_column: str = Field(default="text", description="Column holding the text (or, for tokens, the words).")
    label_column: str | None = Field(default=None, description="Column holding labels (per row or per word).")
    tokenizer: TokenizerSpec = TokenizerSpec()
    # source: images
    layout: Literal["class-per-subfolder", "flat"] = Field(
        default="class-per-subfolder", description="class-per-subfolder: labels are the sorted subfolder names."
    )
    size: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = Field(
        default=None, description="Resize every image to [height, width] (required for a folder)."
    )
    channels: Literal[1, 3] = Field(default=3, description="3: RGB, 1: grayscale.")
    mean: tuple[float, ...] = Field(default=(0.0,), description="Per-channel mean subtracted after scaling to [0, 1].")
    std: tuple[float, ...] = Field(default=(1.0,), description="Per-channel divisor after the mean.")
    input_name: str | None = Field(default=None, description="The model input fed (default: the model's first).")


StepEntry = Annotated[
    str | dict[str, dict[str, Any] | None],
    Field(description="A step name, or {step name: config}."),
]


class StepSpec(_Spec):
    """One build step of a pipeline: its registered name (``quantize.ort_dynamic``) and its config."""

    name: str
    config: dict[str, Any] = Field(default_factory=dict)


class ServingSpace(_Spec):
    """Serving settings: a base, and a grid of dotted keys → values to sweep.

    ``base`` holds only the fields the recipe gives (``model_fields_set`` tells which): what it leaves
    out takes ServingConfig's default, except ``runtime.name``, which comes from each variant's
    artifact (torch for a torch model, onnxruntime for an ONNX export). It is written back as given,
    so a recipe read from a run's ``run.json`` means the same thing again.
    """

    base: ServingConfig = Field(default_factory=ServingConfig, description="ServingConfig fields.")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="e.g. runtime.intra_op_threads: [1, 2]")

    @field_serializer("base")
    def _given_fields_only(self, base: ServingConfig) -> dict[str, Any]:
        return base.model_dump(mode="json", exclude_unset=True)


class OptunaSpec(_Spec):
    """How ``strategy: optuna`` samples the space (pipeline × serving grid, as categorical choices)."""

    sampler: Literal["tpe", "random", "nsga2"] = "tpe"
    seed: int = Field(default=0, ge=0, description="Sampler seed (numpy seeds are non-negative).")
    objectives: list[str] = Field(
        default_factory=list,
        description="Metrics to optimize together (multi-objective, e.g. [throughput_items_per_s, accuracy_drop]); "
        "empty: the recipe's objective alone. Directions come from the metric.",
    )
    startup_trials: int = Field(default=3, ge=1, description="Random trials before TPE models the space.")


class SearchSpec(_Spec):
    """Build pipelines (name → steps) × serving settings."""

    strategy: Literal["grid", "optuna"] = "grid"
    budget: int | None = Field(
        default=None, ge=1, description="Most variants to evaluate, baseline included (default: the whole space)."
    )
    optuna: OptunaSpec = OptunaSpec()
    baseline: str | None = Field(default=None, description="Pipeline judged against (default: the first).")
    pipelines: dict[str, list[StepEntry]] = Field(min_length=1)
    serving: ServingSpace = ServingSpace()

    @field_validator("pipelines")
    @classmethod
    def _steps_well_formed(cls, pipelines: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for name, steps in pipelines.items():
            for index, entry in enumerate(steps):
                if isinstance(entry, dict) and len(entry) != 1:
                    raise ValueError(f"pipeline {name!r} step {index}: write one step per item as {{name: config}}")
        return pipelines

    @model_validator(mode="after")
    def _baseline_exists(self) -> SearchSpec:
        if self.baseline is not None and self.baseline not in self.pipelines:
            raise ValueError(f"baseline {self.baseline!r} is not a pipeline ({', '.join(self.pipelines)})")
        return self

    def baseline_name(self) -> str:
        return self.baseline or next(iter(self.pipelines))

    def steps_of(self, pipeline: str) -> tuple[StepSpec, ...]:
        return tuple(_step_spec(entry) for entry in self.pipelines[pipeline])


def _step_spec(entry: str | dict[str, dict[str, Any] | None]) -> StepSpec:
    if isinstance(entry, str):
        return StepSpec(name=entry)
    ((name, config),) = entry.items()
    return StepSpec(name=name, config=config or {})


class MeasureSpec(_Spec):
    """In-process measurement: per variant and batch size, warm-up then repeated trials."""

    batch_sizes: tuple[Annotated[int, Field(ge=1)], ...] = Field(default=(1, 32), min_length=1)
    warmup_iters: int = Field(default=10, ge=0)
    trials: int = Field(default=5, ge=2, description="Repeated trials; the spread is taken across them.")
    trial_duration_s: float = Field(default=0.5, gt=0)
    min_trial_iters: int = Field(default=20, ge=1)
    max_trial_iters: int = Field(default=100_000, ge=1)
    eval_batch_size: int = Field(default=64, ge=1)

    @field_validator("batch_sizes")
    @classmethod
    def _distinct(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"each batch size once, got {list(sizes)}")
        return sizes

    @model_validator(mode="after")
    def _iters_ordered(self) -> MeasureSpec:
        if self.min_trial_iters > self.max_trial_iters:
            raise ValueError(f"min_trial_iters {self.min_trial_iters} is above max_trial_iters {self.max_trial_iters}")
        return self


class LoadSpec(_Spec):
    """Served load (the load engine). ``enabled: false`` measures in-process only."""

    enabled: bool = False
    profile: LoadProfile | str | None = Field(
        default=None,
        description="The profile (a mapping with a 'kind'), or a name in recipes/profiles/ (the recipe loader "
        "inlines a named profile, so a run records the profile it ran); none: the default closed loop.",
    )
    workers: int = Field(default=0, ge=0)
    protocol: Literal["http", "grpc"] = Field(
        default="http",
        description="How the load reaches the server: OIP v2 over HTTP/REST or over gRPC (the same harness serves "
        "both; run a recipe once per protocol to compare them).",
    )


class Bound(_Spec):
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_side(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}: no value can meet it")
        return self


class ObjectiveSpec(_Spec):
    """What 'best' means among the feasible variants."""

    maximize: str | None = "throughput_rps"
    minimize: str | None = None
    batch_size: int | None = Field(default=None, ge=1, description="Rank at this batch size (default: the largest).")

    @model_validator(mode="after")
    def _exactly_one(self) -> ObjectiveSpec:
        if (self.maximize is None) == (self.minimize is None):
            raise ValueError("give exactly one of maximize or minimize")
        return self


class ExportSpec(_Spec):
    name: str | None = None
    version: str = "0.1.0"
    variant: str = "best"


class CostSpec(_Spec):
    """An instance's price, for each variant's cost per million inferences in the report."""

    price_per_hour: float = Field(gt=0, description="What the machine costs per hour (e.g. 0.34).")
    currency: str = Field(default="USD", description="Shown next to the figures.")


class PoolSpec(_Spec):
    """A hardware pool of a Ray cluster: the nodes that offer the custom resource ``pool:<name>``."""

    price_per_hour: float | None = Field(default=None, gt=0, description="One node's price per hour (cost per 1M).")


class ClusterSpec(_Spec):
    """Where a cluster run measures (``workbench run --cluster``): each variant on each pool in ``targets``.

    ``targets`` maps pool names to their price, or lists names only (``[cpu-small, cpu-large]``).
    Empty: any node with a free ``measure`` slot, and variant ids stay those of a local run.
    """

    targets: dict[str, PoolSpec] = Field(default_factory=dict, description="pool name → {price_per_hour}.")
    load_placement: Literal["spread", "same-node", "other-node"] = Field(
        default="spread",
        description="Where load.workers' Locust workers run: spread over the pool's nodes (the harness's first), "
        "on the harness's node, or on the pool's other nodes.",
    )

    @field_validator("targets", mode="before")
    @classmethod
    def _names_only(cls, targets: Any) -> Any:
        return {name: {} for name in targets} if isinstance(targets, list | tuple) else targets


class Recipe(_Spec):
    """A whole recipe, after ``extends:`` and ``--set`` are applied."""

    # The recipe file's folder (set by the loader): factories, loaders and metrics beside the recipe
    # import from it. Private, so it is neither dumped nor part of the spec hash.
    _folder: Path | None = PrivateAttr(default=None)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Names the report folder.")
    description: str = ""
    seed: int = Field(default=0, ge=0)
    model: ModelSpec
    data: DataSpec = DataSpec()
    search: SearchSpec
    measure: MeasureSpec = MeasureSpec()
    load: LoadSpec = LoadSpec()
    constraints: dict[str, Bound] = Field(
        default_factory=dict, description="metric → {min, max}; e.g. accuracy_drop: {max: 0.01}."
    )
    objective: ObjectiveSpec = ObjectiveSpec()
    export: ExportSpec = ExportSpec()
    cost: CostSpec | None = Field(default=None, description="Instance price: the report adds cost per 1M inferences.")
    cluster: ClusterSpec | None = Field(default=None, description="Hardware pools of a cluster run.")

    @model_serializer(mode="wrap")
    def _no_empty_cluster(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A recipe without a cluster section dumps (and hashes) as it did before the section existed,
        # so its earlier runs still resume.
        data: dict[str, Any] = handler(self)
        if self.cluster is None:
            data.pop("cluster", None)
        return data

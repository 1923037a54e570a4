"""ServingConfig: everything about serving a model that needs no rebuild.

The same frozen value is swept by the workbench, recorded in reports and shipped in bundles as
``serving.json``. Building one never reads the environment: the ``SH_*`` variables are applied by
``python -m serving_harness serve`` alone (see ``serving_harness.__main__``), so a shell that exports
``SH_AUTH_TOKEN`` cannot turn auth on in the lab's own servers.

Example::

    config = ServingConfig(
        runtime=RuntimeSettings(name="onnxruntime", intra_op_threads=1),
        instances=2,
        batching=BatchingSettings(max_batch_size=32, max_queue_delay_us=500),
    )
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RuntimeName = Literal["onnxruntime", "torch", "tensorrt"]
GraphOptimizationLevel = Literal["disable", "basic", "extended", "all"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RuntimeSettings(_Frozen):
    """Which runtime runs the model, and its knobs."""

    name: RuntimeName = Field(default="onnxruntime", description="onnxruntime, torch or tensorrt.")
    intra_op_threads: int = Field(default=1, ge=0, description="Threads inside one op (0 = runtime default).")
    inter_op_threads: int = Field(default=1, ge=0, description="Threads across ops (0 = runtime default).")
    graph_optimization_level: GraphOptimizationLevel = Field(
        default="all", description="onnxruntime graph optimizations: disable, basic, extended or all."
    )
    execution_providers: tuple[str, ...] = Field(
        default=("CPUExecutionProvider",), description='onnxruntime providers, first preferred (JSON: ["..."]).'
    )
    device: str = Field(default="cpu", description="torch device for the torch runtimes: cpu or cuda[:N].")


class BatchingSettings(_Frozen):
    """Dynamic batching: a batch is cut at max_batch_size or after max_queue_delay_us."""

    max_batch_size: int = Field(
        default=1,
        ge=1,
        description="Rows the batcher merges from several requests into one batch at most (1 = no batching); "
        "a larger request runs alone, whole (limits.max_request_rows caps it).",
    )
    max_queue_delay_us: int = Field(default=0, ge=0, description="How long a batch waits to fill, in microseconds.")
    preferred_batch_sizes: tuple[int, ...] = Field(default=(), description="Sizes a batch is cut at (JSON: [8, 16]).")
    inline: bool = Field(
        default=False,
        description="Run each request on the event-loop thread, with no hand-off to an instance thread: less CPU "
        "per request for a model that answers in well under a millisecond, but while it computes the server does "
        "nothing else (health checks and other connections wait). Needs max_batch_size 1 and instances 1.",
    )

    @model_validator(mode="after")
    def _preferred_within_max(self) -> BatchingSettings:
        too_big = [b for b in self.preferred_batch_sizes if b > self.max_batch_size or b < 1]
        if too_big:
            raise ValueError(f"preferred_batch_sizes {too_big} must lie in 1..max_batch_size={self.max_batch_size}")
        if self.inline and self.max_batch_size != 1:
            raise ValueError(
                f"batching.inline runs one request at a time: it needs max_batch_size=1, not {self.max_batch_size}"
            )
        return self


class LimitsSettings(_Frozen):
    """Admission limits: what the server refuses before it does any work."""

    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="Request body size before 413.")
    max_queue_size: int = Field(default=1024, ge=1, description="Queued requests (not rows) per model before 503.")
    max_request_rows: int = Field(
        default=4096,
        ge=1,
        description="Rows (first axis) one request may carry before 413; what a client is told the model accepts.",
    )
    request_timeout_s: float = Field(default=30.0, gt=0, description="Seconds a request may wait before 504.")
    retry_after_s: int = Field(default=1, ge=0, description="Retry-After seconds sent with 429 and 503.")
    # Hostile clients: a connection that holds a socket without sending a request must not lock others out.
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="Seconds a connection may take to send a request's headers before it is closed."
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="Seconds a request's whole body may take to arrive before 408 (then closed)."
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Open connections at most (also kept under the open-file limit); idle ones make room.",
    )


class ServingConfig(_Frozen):
    """How a model is served (keyword-only, frozen). Swept by the workbench, shipped in bundles as serving.json."""

    runtime: RuntimeSettings = RuntimeSettings()
    instances: int = Field(default=1, ge=1, description="Model instances (threads) that run batches.")
    batching: BatchingSettings = BatchingSettings()
    limits: LimitsSettings = LimitsSettings()
    auth_token: str | None = Field(default=None, description="Bearer token for inference and metadata routes.")
    rate_limit_rps: float | None = Field(
        default=None, gt=0, description="Request rate per caller (429 above): the token with auth on, else the address."
    )
    cache_size: int = Field(default=0, ge=0, description="Prediction cache entries (0 = off).")
    grpc_compression: Literal["none", "gzip", "deflate"] = Field(
        default="none",
        description="What gRPC answers of 1 KiB or more are compressed with, for clients that accept it (grpcio's "
        "all do); compressed gRPC requests are read whatever it says. REST follows each request's Accept-Encoding.",
    )
    metrics_auth: bool | None = Field(
        default=None,
        description="Whether /metrics needs the token (its labels name the models). Unset: it does whenever auth "
        "is on. Prometheus then needs authorization credentials; annotation-based scraping cannot send them, so a "
        "deployment that scrapes by annotation sets it false and keeps the port off public networks.",
    )

    @model_validator(mode="after")
    def _inline_on_one_instance(self) -> ServingConfig:
        if self.batching.inline and self.instances != 1:
            raise ValueError(
                f"batching.inline runs the model on the event-loop thread: it needs instances=1, not {self.instances}"
            )
        return self

    @property
    def metrics_need_token(self) -> bool:
        """``metrics_auth``, or, when unset, whether auth is on: a stranger learns no model name by default."""
        return self.auth_token is not None if self.metrics_auth is None else self.metrics_auth

    def describe(self) -> str:
        """A short human label such as ``ort t1 b32/500us x2``."""
        rt = {"onnxruntime": "ort", "torch": "torch", "tensorrt": "trt"}[self.runtime.name]
        parts = [rt, f"t{self.runtime.intra_op_threads}"]
        if self.batching.max_batch_size > 1:
            parts.append(f"b{self.batching.max_batch_size}/{self.batching.max_queue_delay_us}us")
        if self.instances > 1:
            parts.append(f"x{self.instances}")
        return " ".join(parts)

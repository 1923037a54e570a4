"""Load profiles as data, shaped like Locust's ``tick()``: what load to offer, step by step.

Five kinds, each a small YAML file (see ``recipes/profiles/``)::

    kind: concurrency    users: [1, 4, 8]            closed loop: N users, each sends when its last reply came
    kind: constant       rates_rps: [50, 100]        open loop: evenly spaced arrivals
    kind: poisson        rates_rps: [50, 100]        open loop: exponential gaps
    kind: ramp           start_rps / end_rps / duration_s / segments: one open-loop ramp cut into segments
    kind: sla_search     latency_ms_max: 20          the highest arrival rate whose p99 stays within the bound

Open-loop latency counts from the intended send instant (no coordinated omission). Every windowed
step warms up for ``warmup_s`` (not counted), then runs ``window_s`` windows until the last
``min_windows`` agree within ``tolerance`` (throughput) and ``latency_tolerance`` (the percentile)
and hold at least ``min_requests`` requests, or until ``max_windows``; a step that never settled is
flagged ``unsettled``. The defaults are short: a step costs a few seconds on a laptop.

Example::

    profile = load_profile("recipes/profiles/sla.yaml")
    profile = load_profile({"kind": "concurrency", "users": [1, 2]})
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from workbench.errors import NotFoundError, RecipeError
from workbench.recipe.files import read_yaml_mapping

__all__ = [
    "PROFILES_DIR",
    "ConcurrencyProfile",
    "ConstantProfile",
    "LoadProfile",
    "PoissonProfile",
    "RampProfile",
    "SlaSearchProfile",
    "StepPlan",
    "default_profile",
    "load_profile",
    "plan_steps",
]

PROFILES_DIR = Path("recipes") / "profiles"


class _Profile(BaseModel):
    """What every profile shares: payload shape, windows, stability and trust thresholds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_size: int = Field(default=1, ge=1, description="Rows per request.")
    binary: bool = Field(default=False, description="OIP binary tensor extension instead of JSON tensors.")
    warmup_s: float = Field(default=1.0, ge=0, description="Load before measuring; not counted.")
    window_s: float = Field(default=1.0, gt=0, description="Length of one measurement window.")
    min_windows: int = Field(default=3, ge=1, description="The last this many windows must agree.")
    max_windows: int = Field(default=8, ge=1, description="Give up settling after this many (flag 'unsettled').")
    min_duration_s: float = Field(default=0.0, ge=0, description="Measure at least this long per step.")
    tolerance: float = Field(default=0.10, gt=0, description="Throughput spread allowed across settled windows.")
    latency_tolerance: float = Field(default=0.25, gt=0, description="p99 spread allowed across settled windows.")
    min_requests: int = Field(default=300, ge=1, description="Requests the reported windows must hold (p99: 300).")
    max_in_flight: int = Field(default=64, ge=1, description="Open loop: concurrent requests per generator process.")
    request_timeout_s: float = Field(default=10.0, gt=0)
    transport: Literal["wire", "locust"] = Field(
        default="wire",
        description="wire: pre-encoded requests on raw keep-alive sockets (least generator overhead); "
        "locust: Locust's FastHttpSession (https, proxies).",
    )
    generator_cpu_limit_percent: float = Field(
        default=90.0, gt=0, description="A generator process busier than this is saturated: the step is not trusted."
    )
    seed: int = 0

    @model_validator(mode="after")
    def _windows_ordered(self) -> _Profile:
        if self.max_windows < self.min_windows:
            raise ValueError(f"max_windows ({self.max_windows}) must be >= min_windows ({self.min_windows})")
        return self


class ConcurrencyProfile(_Profile):
    """Closed loop: each step runs ``users`` Locust users that send as soon as their last reply came."""

    kind: Literal["concurrency"] = "concurrency"
    users: tuple[int, ...] = Field(default=(1, 4), min_length=1)

    @model_validator(mode="after")
    def _positive(self) -> ConcurrencyProfile:
        if min(self.users) < 1:
            raise ValueError("users must be >= 1")
        return self


class ConstantProfile(_Profile):
    """Open loop, evenly spaced arrivals at each rate."""

    kind: Literal["constant"] = "constant"
    rates_rps: tuple[Annotated[float, Field(gt=0)], ...] = Field(min_length=1)


class PoissonProfile(_Profile):
    """Open loop, Poisson arrivals (exponential gaps) at each mean rate."""

    kind: Literal["poisson"] = "poisson"
    rates_rps: tuple[Annotated[float, Field(gt=0)], ...] = Field(min_length=1)


class RampProfile(_Profile):
    """One open-loop run whose rate moves linearly from ``start_rps`` to ``end_rps`` over
    ``duration_s`` (after ``warmup_s`` at ``start_rps``), reported as ``segments`` equal slices."""

    kind: Literal["ramp"] = "ramp"
    start_rps: float = Field(gt=0)
    end_rps: float = Field(gt=0)
    duration_s: float = Field(default=6.0, gt=0)
    segments: int = Field(default=3, ge=1)
    arrival: Literal["constant", "poisson"] = "poisson"


class SlaSearchProfile(_Profile):
    """Bisection on the arrival rate for the highest rate whose ``latency_percentile`` stays within
    ``latency_ms_max`` with at most ``max_error_rate`` errors (after MLPerf's Server scenario: each
    probe runs at least ``min_duration_s`` and ``min_requests``). Without ``high_rps`` a closed-loop
    step at ``calibration_users`` measures the capacity first and the search starts just above it.
    """

    kind: Literal["sla_search"] = "sla_search"
    latency_ms_max: float = Field(gt=0)
    latency_percentile: Literal["p50", "p90", "p95", "p99", "p999"] = "p99"
    arrival: Literal["constant", "poisson"] = "poisson"
    low_rps: float | None = Field(default=None, gt=0, description="Default: a tenth of the upper bracket.")
    high_rps: float | None = Field(default=None, gt=0, description="Default: 1.1 x the measured capacity.")
    calibration_users: int = Field(default=8, ge=1)
    precision: float = Field(default=0.05, gt=0, description="Stop when (high - low) / low is at most this.")
    max_probes: int = Field(default=8, ge=1)
    max_error_rate: float = Field(default=0.0, ge=0, le=1)
    min_goodput: float = Field(default=0.9, gt=0, le=1, description="Probe fails below this share of offered rate.")

    @model_validator(mode="after")
    def _bracket(self) -> SlaSearchProfile:
        if self.low_rps is not None and self.high_rps is not None and self.low_rps >= self.high_rps:
            raise ValueError(f"low_rps ({self.low_rps}) must be below high_rps ({self.high_rps})")
        return self


LoadProfile = Annotated[
    ConcurrencyProfile | ConstantProfile | PoissonProfile | RampProfile | SlaSearchProfile,
    Field(discriminator="kind"),
]
_ADAPTER: TypeAdapter[LoadProfile] = TypeAdapter(LoadProfile)


@dataclass(frozen=True)
class StepPlan:
    """One load step as the generator runs it."""

    label: str
    loop: Literal["closed", "open"]
    users: int = 1
    rate_rps: float = 0.0
    arrival: Literal["constant", "poisson"] = "constant"
    end_rps: float | None = None  # a ramp ends at this rate
    ramp_s: float = 0.0
    segments: int = 1

    @property
    def is_ramp(self) -> bool:
        return self.end_rps is not None


def closed_step(users: int) -> StepPlan:
    return StepPlan(label=f"c{users}", loop="closed", users=users)


def open_step(rate_rps: float, arrival: Literal["constant", "poisson"]) -> StepPlan:
    return StepPlan(label=f"{arrival} {_rate(rate_rps)}rps", loop="open", rate_rps=rate_rps, arrival=arrival)


def _rate(rate_rps: float) -> str:
    return f"{rate_rps:.0f}" if rate_rps >= 10 else f"{rate_rps:.3g}"


def plan_steps(profile: LoadProfile) -> list[StepPlan]:
    """The fixed steps of a profile (an SLA search plans its probes as it goes: none here)."""
    if isinstance(profile, ConcurrencyProfile):
        return [closed_step(users) for users in profile.users]
    if isinstance(profile, ConstantProfile | PoissonProfile):
        return [open_step(rate, profile.kind) for rate in profile.rates_rps]
    if isinstance(profile, RampProfile):
        label = f"ramp {_rate(profile.start_rps)}-{_rate(profile.end_rps)}rps"
        return [
            StepPlan(
                label=label,
                loop="open",
                rate_rps=profile.start_rps,
                arrival=profile.arrival,
                end_rps=profile.end_rps,
                ramp_s=profile.duration_s,
                segments=profile.segments,
            )
        ]
    return []


def max_step_s(profile: LoadProfile, step: StepPlan) -> float:
    """The longest a step may generate load: warm-up plus every window (or the ramp)."""
    if step.is_ramp:
        return profile.warmup_s + step.ramp_s
    windows = max(profile.max_windows, math.ceil(profile.min_duration_s / profile.window_s))
    return profile.warmup_s + windows * profile.window_s


def default_profile() -> ConcurrencyProfile:
    """What a recipe gets when it enables load without naming a profile."""
    return ConcurrencyProfile(users=(1, 4))


def load_profile(
    source: LoadProfile | Mapping[str, Any] | str | Path | None, *, base_dir: Path | None = None
) -> LoadProfile:
    """A profile from a mapping, a YAML file, or a bare name in ``recipes/profiles/`` (``sla``).

    Relative paths are tried against ``base_dir`` (e.g. the recipe's folder), then the working folder.
    """
    if source is None:
        return default_profile()
    if isinstance(source, BaseModel):
        return source
    if isinstance(source, Mapping):
        return _validate(dict(source), where=None)
    path = _find(str(source), base_dir)
    return _validate(read_yaml_mapping(path, "a load profile: a mapping with a 'kind'"), where=str(path))


def _find(reference: str, base_dir: Path | None) -> Path:
    names = [reference] if reference.endswith((".yaml", ".yml")) else [reference, f"{reference}.yaml"]
    roots = [r for r in (base_dir, Path.cwd(), Path.cwd() / PROFILES_DIR) if r is not None]
    if base_dir is not None:
        roots.append(base_dir / "profiles")
    for root in roots:
        for name in names:
            candidate = Path(name) if Path(name).is_absolute() else root / name
            if candidate.is_file():
                return candidate
    known = ", ".join(sorted(p.stem for p in (Path.cwd() / PROFILES_DIR).glob("*.yaml"))) or "none found"
    raise NotFoundError(f"load profile {reference!r} not found (profiles in {PROFILES_DIR}/: {known})")


def _validate(data: dict[str, Any], *, where: str | None) -> LoadProfile:
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise RecipeError(first["msg"], file=where, key=key or None) from exc

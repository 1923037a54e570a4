"""The bundle's deployment and monitoring files, rendered from ``templates/`` with the manifest's figures.

Templates use ``@{name}`` placeholders (``string.Template`` with ``@`` as the delimiter, so the ``$``
of shell, PromQL and Go templates passes through untouched); a placeholder without a value is an
error, not an empty string. The ``promtool test rules`` file is generated, not templated: its expected
annotations are read back from the rendered rules, so the two cannot disagree.
"""

from __future__ import annotations

import json
import math
import re
import string
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

import serving_harness
from serving_harness.config import ServingConfig
from serving_harness.metrics import LATENCY_BUCKETS_S
from workbench.errors import UsageError

__all__ = ["DeployOptions", "render_deployment"]

# template file -> where it goes in the bundle
OUTPUTS = {
    "Dockerfile": "Dockerfile",
    "README.md": "README.md",
    "deployment.yaml": "deploy/k8s/deployment.yaml",
    "service.yaml": "deploy/k8s/service.yaml",
    "hpa.yaml": "deploy/k8s/hpa.yaml",
    "inferenceservice.yaml": "deploy/kserve/inferenceservice.yaml",
    "inferenceservice-grpc.yaml": "deploy/kserve/inferenceservice-grpc.yaml",  # KServe: one port per predictor
    "alerts.yaml": "monitoring/alerts.yaml",
    "dashboard.json": "monitoring/dashboard.json",
}
RULES_TEST = "monitoring/alerts_test.yaml"
_COMPOSED = frozenset({"trust_args"})  # written here, quoted for the JSON arrays they land in: never escaped
# Where the deployment files mount the trusted public key (a ConfigMap: a public key is no secret).
TRUST_KEY_PATH = "/etc/serving-harness/trust/bundle.pub"
REFERENCE_VERSION = "0.0.0-healthy"  # the healthy series in the rule tests: it must never alert
_LABEL = re.compile(r"\{\{\s*\$labels\.(\w+)\s*\}\}")


class _Template(string.Template):
    delimiter = "@"


@dataclass(frozen=True)
class DeployOptions:
    """Knobs of the deployment files that the run does not decide."""

    image: str | None = None
    port: int = 8000
    min_replicas: int = 2
    max_replicas: int = 8


def render_deployment(
    directory: Path,
    manifest: dict[str, Any],
    settings: ServingConfig,
    options: DeployOptions,
    *,
    signer: str | None = None,
) -> None:
    """Write every deployment and monitoring file of the bundle in ``directory``.

    ``signer``: the id of the key that signs the bundle; the image and manifests then serve it with
    ``--trust`` and the public key mounted from a ConfigMap, and refuse it unsigned or re-signed.
    """
    values = {**_values(manifest, settings, options), **_trust_values(signer)}
    templates = files("workbench.bundle") / "templates"
    for template, target in OUTPUTS.items():
        text = templates.joinpath(template).read_text()
        escape = _json_text if template.endswith(".json") else _plain_text
        rendered = _Template(text).substitute(
            {key: str(value) if key in _COMPOSED else escape(str(value)) for key, value in values.items()}
        )
        path = directory / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered)
    rules = yaml.safe_load((directory / OUTPUTS["alerts.yaml"]).read_text())
    tests = rule_tests(rules, manifest, Path(OUTPUTS["alerts.yaml"]).name)
    (directory / RULES_TEST).write_text(yaml.safe_dump(tests, sort_keys=False, width=120))


def _trust_values(signer: str | None) -> dict[str, str]:
    """The ``--trust`` arguments (a JSON-array fragment) and the words that say whether the bundle is signed."""
    if signer is None:
        return {
            "trust_args": "",
            "trust_path": TRUST_KEY_PATH,
            "trust_optional": "true",
            "trust_line": "Unsigned: served without --trust (export with --sign KEY to pin who made it).",
        }
    return {
        "trust_args": f', "--trust", "{TRUST_KEY_PATH}"',
        "trust_path": TRUST_KEY_PATH,
        "trust_optional": "false",
        "trust_line": f"Signed by key {signer}: served with --trust {TRUST_KEY_PATH} (the public key, from a ConfigMap).",
    }


def _json_text(value: str) -> str:
    return json.dumps(value)[1:-1]


def _plain_text(value: str) -> str:
    return value.replace('"', "'").replace("\\", "/")  # free text lands inside YAML double quotes


def dns_name(text: str) -> str:
    """A Kubernetes (DNS-1123) name: lower case, digits and '-', at most 63 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return name[:63].rstrip("-") or "model"


def alert_prefix(name: str) -> str:
    """``digits-cpu`` -> ``DigitsCpu``: alert names are identifiers."""
    words = re.split(r"[^A-Za-z0-9]+", name)
    prefix = "".join(word[:1].upper() + word[1:] for word in words if word)
    return prefix if prefix[:1].isalpha() else f"Model{prefix}"


def _memory(rss_mb: float | None) -> tuple[str, str]:
    """Memory request and limit: twice the measured server RSS (at least 256 Mi), limit twice that."""
    request_mb = max(256, math.ceil(2 * (rss_mb or 256) / 64) * 64)
    return f"{request_mb}Mi", f"{2 * request_mb}Mi"


def _values(manifest: dict[str, Any], settings: ServingConfig, options: DeployOptions) -> dict[str, Any]:
    slo = manifest["slo"]
    name, version = manifest["name"], manifest["version"]
    memory, memory_limit = _memory(slo.get("server_rss_mb"))
    source = manifest.get("source", {})
    return {
        "name": name,
        "version": version,
        "run_id": source.get("run_id", "?"),
        "recipe": source.get("recipe", "?"),
        "variant": source.get("variant", "?"),
        "k8s_model": dns_name(name),
        "k8s_name": dns_name(f"{name}-{version}"),
        "image": options.image or f"{dns_name(name)}:{version.replace('+', '-')}",
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "harness_version": serving_harness.__version__,
        "port": options.port,
        "cpu": max(1, settings.runtime.intra_op_threads) * settings.instances,
        "memory": memory,
        "memory_limit": memory_limit,
        "grace_s": math.ceil(settings.limits.request_timeout_s) + 10,
        "min_replicas": options.min_replicas,
        "max_replicas": max(options.max_replicas, options.min_replicas),
        "alert": alert_prefix(name),
        "dashboard_uid": f"sh-{dns_name(name)}"[:40],
        **_slo_values(slo),
        **_lines(manifest),
    }


def _slo_values(slo: dict[str, Any]) -> dict[str, Any]:
    budget_ms = float(slo["latency_budget_ms_p99"])
    if budget_ms / 1000 >= LATENCY_BUCKETS_S[-2]:
        raise UsageError(f"a p99 budget of {budget_ms} ms is beyond the harness's latency histogram")
    return {
        "slo_source": slo["source"],
        "load": slo["load"],
        "p50_ms": _figure(slo.get("latency_ms_p50")),
        "p99_ms": _figure(slo.get("latency_ms_p99")),
        "budget_ms": _figure(budget_ms),
        "budget_s": repr(round(budget_ms / 1000, 6)),
        "budget_basis": slo["budget_basis"],
        "error_rate_max": repr(float(slo["error_rate_max"])),
        "error_rate_pct": _figure(100 * float(slo["error_rate_max"])),
        "psi_warning": repr(float(slo.get("psi_warning", 0.25))),
        "throughput_rps": _figure(slo.get("throughput_rps")),
    }


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{float(value):.4g}"


def _lines(manifest: dict[str, Any]) -> dict[str, str]:
    accuracy = manifest.get("accuracy") or {}
    slo = manifest["slo"]
    rate = slo.get("max_throughput_rps_under_sla")
    fallback = manifest.get("fallback")
    return {
        "accuracy_line": (
            f"Quality: {accuracy['metric']} {accuracy['value']:.4f} (the source model: {accuracy['baseline']:.4f})."
            if accuracy
            else "Quality: not measured."
        ),
        "throughput_line": (
            f"Highest throughput under the SLA: {rate:.4g} req/s ({slo['max_throughput_basis']})."
            if rate is not None
            else f"Highest throughput under the SLA: not measured ({slo['max_throughput_basis']})."
        ),
        "fallback_line": (
            f"Fallback: variant `{fallback['variant']}` answers when this one errors or takes over "
            f"{fallback['primary_timeout_s']:g} s (counted in sh_fallback_total)."
            if fallback
            else "No fallback variant."
        ),
    }


# -------------------------------------------------------------------------------------------- rule tests


def rule_tests(rules: dict[str, Any], manifest: dict[str, Any], rules_file: str) -> dict[str, Any]:
    """A ``promtool test rules`` file: each alert fires for a failing version and not for a healthy one."""
    name, version = manifest["name"], manifest["version"]
    slo = manifest["slo"]
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    prefix = alert_prefix(name)
    cases = [
        _latency_case(name, version, float(slo["latency_budget_ms_p99"]) / 1000),
        _error_case(name, version, float(slo["error_rate_max"])),
        _drift_case(name, version, float(slo.get("psi_warning", 0.25))),
        _not_ready_case(name, version),
        _fallback_case(name, version),
    ]
    tests = []
    for suffix, series, eval_time, labels in cases:
        rule = alerts[prefix + suffix]
        tests.append(_test(rule, series, eval_time, [labels]))
    absent = alerts[prefix + "MetricsAbsent"]
    tests.append(_test(absent, [], "10m", [{"model": name}]))
    return {"rule_files": [rules_file], "evaluation_interval": "1m", "tests": tests}


Case = tuple[str, list[dict[str, str]], str, dict[str, str]]


def _series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ",".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def _latency_case(name: str, version: str, budget_s: float) -> Case:
    # the failing version's requests all fall in the first bucket that lies wholly above the budget,
    # the healthy one's in the lowest bucket
    slow = next(i for i in range(1, len(LATENCY_BUCKETS_S)) if LATENCY_BUCKETS_S[i - 1] >= budget_s)
    series = _buckets(name, version, slow) + _buckets(name, REFERENCE_VERSION, 0)
    return "LatencyP99OverBudget", series, "15m", {"model": name, "version": version}


def _buckets(name: str, version: str, index: int) -> list[dict[str, str]]:
    metric, labels = "sh_request_duration_seconds_bucket", {"model": name, "version": version}
    below = [_series(metric, {**labels, "le": repr(LATENCY_BUCKETS_S[index - 1])}, "0x20")] if index else []
    return [
        *below,
        _series(metric, {**labels, "le": repr(LATENCY_BUCKETS_S[index])}, "0+60x20"),
        _series(metric, {**labels, "le": "+Inf"}, "0+60x20"),
    ]


def _error_case(name: str, version: str, error_rate_max: float) -> Case:
    failing = min(100, math.floor(error_rate_max * 100) + 10)
    series = [
        _series("sh_requests_total", {"model": name, "version": version, "status": "200"}, f"0+{100 - failing}x20"),
        _series("sh_requests_total", {"model": name, "version": version, "status": "504"}, f"0+{failing}x20"),
        _series("sh_requests_total", {"model": name, "version": REFERENCE_VERSION, "status": "200"}, "0+100x20"),
    ]
    return "ErrorRateHigh", series, "15m", {"model": name, "version": version}


def _drift_case(name: str, version: str, psi: float) -> Case:
    labels = {"direction": "input", "tensor": "input", "stat": "max"}
    series = [
        _series("sh_drift_psi", {"model": name, "version": version, **labels}, f"{round(psi * 4, 6)}x30"),
        _series("sh_drift_psi", {"model": name, "version": REFERENCE_VERSION, **labels}, f"{round(psi / 10, 6)}x30"),
    ]
    return "DriftHigh", series, "20m", {"model": name, "version": version, "direction": "input", "tensor": "input"}


def _not_ready_case(name: str, version: str) -> Case:
    series = [
        _series("sh_model_ready", {"model": name, "version": version}, "0x10"),
        _series("sh_model_ready", {"model": name, "version": REFERENCE_VERSION}, "1x10"),
    ]
    return "NotReady", series, "5m", {"model": name, "version": version}


def _fallback_case(name: str, version: str) -> Case:
    series = [
        _series("sh_fallback_total", {"model": name, "version": version, "reason": "timeout"}, "0+5x20"),
        _series("sh_fallback_total", {"model": name, "version": REFERENCE_VERSION, "reason": "timeout"}, "0x20"),
    ]
    return "FallbackServing", series, "15m", {"model": name, "version": version}


def _expand(text: str, labels: dict[str, str]) -> str:
    """The Go template's ``{{ $labels.x }}`` with the alert's labels: what Prometheus will write."""
    return _LABEL.sub(lambda match: labels.get(match.group(1), ""), text)


def _test(
    rule: dict[str, Any], series: list[dict[str, str]], eval_time: str, fired: list[dict[str, str]]
) -> dict[str, Any]:
    expected = []
    for labels in fired:
        annotations = {key: _expand(text, labels) for key, text in rule["annotations"].items()}
        expected.append({"exp_labels": {**rule.get("labels", {}), **labels}, "exp_annotations": annotations})
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [{"eval_time": eval_time, "alertname": rule["alert"], "exp_alerts": expected}],
    }

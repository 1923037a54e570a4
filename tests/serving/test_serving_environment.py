"""SH_* variables: a ServingConfig built in Python never reads them; ``python -m serving_harness serve`` does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
import serving_support as support
from serving_support import infer_json

from serving_harness.__main__ import _parser, resolve, settings_from_environment
from serving_harness.config import ServingConfig
from serving_harness.errors import BadInput

ONE = np.ones((1, 4), dtype=np.float32)


def test_exported_sh_variables_reach_serve_but_not_a_config_built_in_python(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a CI job does: export the token for the deployed server, then run the lab in the same shell.
    monkeypatch.setenv("SH_AUTH_TOKEN", "ci-secret")
    monkeypatch.setenv("SH_CACHE_SIZE", "8")

    built_in_python = ServingConfig()
    args = ["--model", str(models_dir / "double.onnx"), "--name", "digits"]
    with support.harness_process(*args) as (_, url):  # inherits this environment
        anonymous = httpx.post(f"{url}/v2/models/digits/infer", json=infer_json(ONE))
        headers = {"Authorization": "Bearer ci-secret"}
        for _ in range(2):
            authorized = httpx.post(f"{url}/v2/models/digits/infer", json=infer_json(ONE), headers=headers)
        metrics = httpx.get(f"{url}/metrics", headers=headers).text

    assert built_in_python.auth_token is None
    assert built_in_python.cache_size == 0
    assert anonymous.status_code == 401
    assert authorized.status_code == 200
    assert support.metric_value(metrics, "sh_cache_hits_total", model="digits") == 1  # SH_CACHE_SIZE applied


def test_variables_map_onto_nested_fields_and_tuples_take_json() -> None:
    environ = {
        "SH_BATCHING__MAX_BATCH_SIZE": "32",
        "sh_runtime__execution_providers": '["CPUExecutionProvider"]',
        "SH_AUTH_TOKEN": "t",
        "PATH": "/bin",
        "SERVING_HARNESS_SPEC": "{}",  # not an SH_ variable: the workers' hand-over
    }

    data = settings_from_environment(environ)

    assert data == {
        "auth_token": "t",
        "batching": {"max_batch_size": "32"},
        "runtime": {"execution_providers": ["CPUExecutionProvider"]},
    }
    config = ServingConfig(**data)
    assert (config.batching.max_batch_size, config.runtime.execution_providers) == (32, ("CPUExecutionProvider",))


@pytest.mark.parametrize("variable", ["SH_AUTH_TOKNE", "SH_BATCHING__NOPE", "SH_INSTANCES__COUNT", "SH_"])
def test_an_sh_variable_that_names_no_setting_is_refused(variable: str) -> None:
    # A misspelt SH_AUTH_TOKEN must not quietly serve without auth.
    with pytest.raises(BadInput, match=f"{variable} names no serving setting"):
        settings_from_environment({variable: "x"})


def test_a_tuple_variable_that_is_not_json_is_refused() -> None:
    with pytest.raises(BadInput, match="SH_BATCHING__PREFERRED_BATCH_SIZES must be JSON"):
        settings_from_environment({"SH_BATCHING__PREFERRED_BATCH_SIZES": "8,16"})


def test_serving_json_and_flags_win_over_the_environment(models_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes((models_dir / "double.onnx").read_bytes())
    (tmp_path / "serving.json").write_text(json.dumps({"cache_size": 8}))
    environ = {"SH_CACHE_SIZE": "4", "SH_INSTANCES": "3", "SH_AUTH_TOKEN": "tok", "SH_LIMITS__RETRY_AFTER_S": "7"}
    args = _parser().parse_args(["serve", str(tmp_path), "--instances", "2"])

    _, served = resolve(args, environ)
    _, without_environment = resolve(args)

    assert (served.cache_size, served.instances) == (8, 2)  # serving.json, then the flag
    assert (served.auth_token, served.limits.retry_after_s) == ("tok", 7)  # only the environment set these
    assert without_environment.auth_token is None


def test_a_bad_variable_stops_serve_with_one_line_and_exit_2(models_dir: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "serving_harness", "serve", "--model", str(models_dir / "double.onnx"), "--port", "0"],
        env={**os.environ, "SH_INSTANCES": "0"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "serving_harness: serving settings: instances: Input should be greater than or equal to 1"
    ]

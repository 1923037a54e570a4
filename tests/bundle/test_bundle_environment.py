"""SH_* variables under a bundle's serving.json: a deployment's token applies, the measured settings stay."""

from __future__ import annotations

import pytest

from serving_harness.__main__ import _parser, resolve_bundles
from workbench.bundle.export import ExportedBundle


@pytest.mark.slow  # a real run or served load step: `make test` runs it, `make test-fast` skips it
def test_a_deployments_sh_variables_fill_what_serving_json_leaves_open(bundle: ExportedBundle) -> None:
    args = _parser().parse_args(["serve", str(bundle.path)])
    environ = {"SH_AUTH_TOKEN": "deploy-token", "SH_RATE_LIMIT_RPS": "50", "SH_INSTANCES": "7"}

    deployed = resolve_bundles(args, environ).settings
    in_python = resolve_bundles(args).settings

    assert (deployed.auth_token, deployed.rate_limit_rps) == ("deploy-token", 50.0)  # not in serving.json
    assert deployed.instances == in_python.instances != 7  # serving.json's measured value wins
    assert (in_python.auth_token, in_python.rate_limit_rps) == (None, None)

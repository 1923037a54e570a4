"""examples/kuberay/raycluster.yaml is a RayCluster that gives every node a measure slot and a pool (offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

EXAMPLE = Path(__file__).parents[2] / "examples" / "kuberay"


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((EXAMPLE / "raycluster.yaml").read_text())
    return document


def test_the_example_matches_the_raycluster_schema(cluster: dict[str, Any]) -> None:
    schema = json.loads((EXAMPLE / "raycluster.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(cluster, schema, cls=jsonschema.Draft202012Validator)


def test_the_schema_rejects_what_kuberay_would(cluster: dict[str, Any]) -> None:
    schema = json.loads((EXAMPLE / "raycluster.schema.json").read_text())
    wrong = {**cluster, "spec": {**cluster["spec"], "workerGroupSpecs": [{"replicas": 1}]}}  # no groupName
    with pytest.raises(jsonschema.ValidationError, match="groupName"):
        jsonschema.validate(wrong, schema, cls=jsonschema.Draft202012Validator)


def test_every_worker_group_is_a_pool_with_one_measure_slot(cluster: dict[str, Any]) -> None:
    for group in cluster["spec"]["workerGroupSpecs"]:
        resources = json.loads(json.loads(group["rayStartParams"]["resources"]))  # KubeRay passes it quoted
        assert resources == {"measure": 1, f"pool:{group['groupName']}": 1}
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]

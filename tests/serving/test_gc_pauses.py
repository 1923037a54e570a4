"""Issue 17's tail: a full garbage collection walked every object the server built at start-up (about
20 ms on a 2-core CPU, landing on whichever requests were in flight). Once a model is loaded, what it
built is out of the collector's reach, so a collection walks only what requests allocate."""

from __future__ import annotations

import gc
from pathlib import Path

from serving_harness.config import ServingConfig
from serving_harness.metrics import Metrics
from serving_harness.model import ModelConfig, ModelState, ServedModel


def test_a_loaded_model_is_out_of_the_collectors_reach(models_dir: Path) -> None:
    model = ServedModel(
        ModelConfig("double", models_dir / "double.onnx"), ServingConfig(), Metrics().for_model("double")
    )

    model.load()

    assert model.state is ModelState.READY
    walked = {id(o) for o in gc.get_objects()}  # every object a full collection visits (frozen ones are not)
    assert id(model) not in walked
    assert id(model.schema) not in walked
    assert gc.get_freeze_count() > 0

"""Recipes: extends, --set, located errors, a stable hash, and every file in recipes/ validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.errors import RecipeError
from workbench.recipe.loader import load_recipe, recipe_json_schema, spec_hash
from workbench.recipe.profiles import load_profile
from workbench.sweep.space import expand

RECIPES = sorted((Path(__file__).parents[2] / "recipes").rglob("*.yaml"))
MINIMAL = """
name: tiny
model: {source: example, name: digits}
search:
  pipelines:
    torch-eager: []
    ort-fp32: [export.onnx]
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_validates(path: Path) -> None:
    if path.parent.name == "profiles":
        assert load_profile(path).kind in {"concurrency", "constant", "poisson", "ramp", "sla_search"}
        return
    recipe = load_recipe(path)
    assert expand(recipe), f"{path} expands to no variant"


def test_recipes_folder_is_not_empty() -> None:
    assert {"digits-cpu.yaml", "minilm-cpu.yaml"} <= {p.name for p in RECIPES}


def test_extends_merges_mappings_deeply(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", MINIMAL + "measure: {trials: 7, batch_sizes: [1, 4]}\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nname: child\nmeasure: {trials: 3}\n")
    recipe = load_recipe(child)
    assert recipe.name == "child"
    assert recipe.measure.trials == 3
    assert recipe.measure.batch_sizes == (1, 4)
    assert list(recipe.search.pipelines) == ["torch-eager", "ort-fp32"]


def test_extends_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "extends: b.yaml\n" + MINIMAL)
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")


def test_set_overrides_with_yaml_values(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", MINIMAL)
    recipe = load_recipe(path, ["measure.trials=4", "measure.batch_sizes=[2, 8]", "constraints.accuracy_drop.max=0.02"])
    assert recipe.measure.trials == 4
    assert recipe.measure.batch_sizes == (2, 8)
    assert recipe.constraints["accuracy_drop"].max == 0.02


def test_unknown_key_is_located(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", MINIMAL + "measure: {trails: 3}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert info.value.file == str(path)
    assert info.value.key == "measure.trails"
    assert "unknown key" in str(info.value)
    assert info.value.exit_code == 2


def test_wrong_type_says_what_was_expected(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", MINIMAL + "measure: {trials: many}\n")
    with pytest.raises(RecipeError, match=r"measure\.trials: .*integer"):
        load_recipe(path)


def test_unknown_step_lists_available(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", MINIMAL.replace("export.onnx", "export.onix"))
    with pytest.raises(
        RecipeError, match=r"search\.pipelines\.ort-fp32\.0: unknown steps 'export.onix'; available: .*export\.onnx"
    ):
        expand(load_recipe(path))


def test_bad_step_config_is_located(tmp_path: Path) -> None:
    bad = MINIMAL.replace("[export.onnx]", "[export.onnx, {quantize.ort_dynamic: {per_chanel: true}}]")
    path = write(tmp_path, "r.yaml", bad)
    with pytest.raises(RecipeError, match=r"search\.pipelines\.ort-fp32\.1\.per_chanel"):
        expand(load_recipe(path))


def test_invalid_yaml_gives_line(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", "name: [unclosed\n")
    with pytest.raises(RecipeError, match="line"):
        load_recipe(path)


def test_bad_set_syntax(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"dotted\.key=value"):
        load_recipe(write(tmp_path, "r.yaml", MINIMAL), ["measure.trials"])


def test_spec_hash_ignores_formatting_but_not_content(tmp_path: Path) -> None:
    a = load_recipe(write(tmp_path, "a.yaml", MINIMAL))
    b = load_recipe(
        write(
            tmp_path,
            "b.yaml",
            "# comment\n" + MINIMAL.replace("source: example, name: digits", "name: digits, source: example"),
        )
    )
    c = load_recipe(write(tmp_path, "c.yaml", MINIMAL), ["measure.trials=9"])
    assert spec_hash(a) == spec_hash(b)
    assert spec_hash(a) != spec_hash(c)
    assert len(spec_hash(a)) == 12


def test_json_schema_names_the_sections() -> None:
    schema = recipe_json_schema()
    assert {"model", "data", "search", "measure", "constraints", "objective", "export"} <= set(schema["properties"])


def test_a_directory_is_not_a_recipe(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="got a directory") as info:
        load_recipe(tmp_path)
    assert info.value.file == str(tmp_path) and info.value.exit_code == 2


def test_a_file_that_is_not_utf8_is_located(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(b"name: tiny\n\xff\xfe\x00binary")
    with pytest.raises(RecipeError, match=r"expected UTF-8 text, found byte 0xff at offset 11") as info:
        load_recipe(path)
    assert info.value.file == str(path)


def test_extends_naming_a_directory_is_located(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    path = write(tmp_path, "r.yaml", "extends: base\n" + MINIMAL)
    with pytest.raises(RecipeError, match="got a directory") as info:
        load_recipe(path)
    assert info.value.file == str(tmp_path / "base")


def test_an_empty_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="the file is empty"):
        load_recipe(write(tmp_path, "r.yaml", ""))


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_recipe(path).name == "tiny"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["measure.batch_sizes=[0]"], "measure.batch_sizes.0"),
        (["measure.batch_sizes=[1, -8]"], "measure.batch_sizes.1"),
        (["measure.batch_sizes=[8, 8]"], "measure.batch_sizes"),
        (["measure.trials=1"], "measure.trials"),
        (["measure.trial_duration_s=0"], "measure.trial_duration_s"),
        (["measure.warmup_iters=-1"], "measure.warmup_iters"),
        (["measure.min_trial_iters=50", "measure.max_trial_iters=10"], "measure"),
        (["measure.eval_batch_size=0"], "measure.eval_batch_size"),
        (["objective.batch_size=0"], "objective.batch_size"),
        (["seed=-1"], "seed"),
        (["search.optuna.seed=-1"], "search.optuna.seed"),
        (["search.budget=0"], "search.budget"),
        (["load.workers=-1"], "load.workers"),
        (["data.limit=0"], "data.limit"),
        (["cost.price_per_hour=0"], "cost.price_per_hour"),
        (["constraints.accuracy_drop={min: 0.5, max: 0.1}"], "constraints.accuracy_drop"),
    ],
)
def test_numbers_out_of_range_name_their_key(tmp_path: Path, overrides: list[str], key: str) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(write(tmp_path, "r.yaml", MINIMAL), overrides)
    assert info.value.key == key
    assert info.value.exit_code == 2


def test_a_load_profile_that_is_not_utf8_is_located(tmp_path: Path) -> None:
    profile = tmp_path / "bad.yaml"
    profile.write_bytes(b"kind: concurrency\nusers: [1, \xff]\n")

    with pytest.raises(RecipeError, match="expected UTF-8 text") as info:
        load_profile(str(profile))

    assert info.value.file == str(profile)

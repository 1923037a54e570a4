"""The public surface is curated: this test changes only on purpose (after httpx's)."""

import workbench


def test_public_api_is_pinned() -> None:
    assert set(workbench.__all__) == {
        "BuildError",
        "MeasurementError",
        "MissingDependencyError",
        "NotFoundError",
        "RecipeError",
        "UsageError",
        "WorkbenchError",
        "__version__",
        "compare",
        "export",
        "load_report",
        "load_runs",
        "run",
        "select",
    }
    for name in workbench.__all__:
        assert getattr(workbench, name) is not None


def test_select_is_not_shadowed_by_its_module() -> None:
    import workbench.select  # the module of the same name, imported after the package

    assert callable(workbench.select) and callable(workbench.compare)


def test_serving_harness_never_imports_workbench() -> None:
    import subprocess
    import sys

    code = "import sys, serving_harness, serving_harness.runtimes; print(any(m.split('.')[0] == 'workbench' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

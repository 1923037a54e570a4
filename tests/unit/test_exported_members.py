"""The public surface is curated: this test changes only on purpose (after httpx's)."""

import workbench


def test_public_api_is_pinned() -> None:
    assert set(workbench.__all__) == {
        "BuildError",
        "MeasurementError",
        "MissingDependencyError",
        "NoFeasibleVariant",
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


def test_no_module_shadows_an_api_function() -> None:
    import workbench.decide.select
    import workbench.sweep.runner

    assert callable(workbench.select) and callable(workbench.run) and callable(workbench.compare)


def test_serving_harness_never_imports_workbench() -> None:
    import subprocess
    import sys

    code = "import sys, serving_harness, serving_harness.runtimes; print(any(m.split('.')[0] == 'workbench' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

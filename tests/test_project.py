"""The project's own contracts: dependencies in step, notebook pairs in sync and executed, CI wiring."""
import json
import sys
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# conda-forge names for PyPI names that differ
CONDA_NAMES = {"torch": "pytorch"}


def requirement_names(reqs):
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].strip().lower() for r in reqs}


def test_environment_yml_names_the_same_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pypi = requirement_names(project["dependencies"]) | requirement_names(project["optional-dependencies"]["dev"])
    wanted = {CONDA_NAMES.get(n, n) for n in pypi}
    conda = set()
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("dependencies:", 1)[1].splitlines():
        m = re.match(r"\s+-\s+([A-Za-z0-9_.-]+)\s*(?:[<>=].*)?(?:#.*)?$", line)
        if m and m.group(1) not in ("python", "pip", "-e"):
            conda.add(m.group(1).lower())
    assert wanted == conda, f"only in pyproject: {wanted - conda}; only in environment.yml: {conda - wanted}"
    assert "- -e ." in text


def test_no_exact_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for req in project["dependencies"] + project["optional-dependencies"]["dev"]:
        assert "==" not in req, f"{req}: lower bounds only"


def notebook_pairs():
    return sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb"))


def test_every_notebook_has_its_pair():
    ipynbs = {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb")}
    pys = {p.stem for p in NOTEBOOKS.glob("[0-9][0-9]*_*.py")}
    assert ipynbs, "no notebooks found"
    assert ipynbs == pys, f"unpaired: {sorted(ipynbs ^ pys)}"


@pytest.mark.parametrize("ipynb", notebook_pairs(), ids=lambda p: p.name)
def test_pair_inputs_are_identical(ipynb):
    jupytext = pytest.importorskip("jupytext")
    a, b = jupytext.read(ipynb), jupytext.read(ipynb.with_suffix(".py"))
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(a) == cells(b), f"{ipynb.name} and its .py differ: edit the .py, then `make notebooks NB={ipynb.name.split('_')[0]}`"


@pytest.mark.parametrize("ipynb", notebook_pairs(), ids=lambda p: p.name)
def test_notebook_is_executed_cleanly(ipynb):
    nb = json.loads(ipynb.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    assert all(c.get("execution_count") for c in code), "unexecuted cells: run `make notebooks`"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "cells were not executed top to bottom in one kernel"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"stored error output: {errors[0].get('ename')}"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("ipynb", notebook_pairs(), ids=lambda p: p.name)
def test_notebook_opening_and_claims(ipynb):
    """Each notebook opens with what you will see and its CPU runtime, and asserts its claims (labkit.claims)."""
    nb = json.loads(ipynb.read_text())
    first = "".join(nb["cells"][0]["source"])
    assert first.startswith("# ") and "runtime" in first.lower()
    sources = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "setup_notebook(" in sources and "labkit.claims" in sources and "claim(" in sources
    for line in sources.splitlines():   # nbval markers must be exact to work
        if "NBVAL_" in line and line.strip().startswith("#"):
            assert line.strip() in ("# NBVAL_IGNORE_OUTPUT", "# NBVAL_SKIP", "# NBVAL_RAISES_EXCEPTION", "# NBVAL_CHECK_OUTPUT"), line


def test_sanitize_file_parses_like_nbval():
    text = (ROOT / "tests/nbval_sanitize.cfg").read_text()
    pairs = re.findall(r"^regex: (.*)$\n^replace: (.*)$", text, flags=re.MULTILINE)
    n_regex = sum(line.startswith("regex:") for line in text.splitlines())
    assert len(pairs) == n_regex and all(r for _, r in pairs)
    for regex, _ in pairs:
        re.compile(regex)


def test_ci_and_readme_use_the_same_commands():
    assert "make test" in (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make lab" in readme
    for nb in notebook_pairs():
        assert nb.name in readme, f"README's notebook map lacks {nb.name}"


def test_lab_settings_turn_the_news_popup_off(tmp_path):
    """`make lab` greets a newcomer with the README, not with JupyterLab's news pop-up."""
    sys.path.insert(0, str(ROOT / "tools"))
    import setup_env

    setup_env.configure_lab(tmp_path)
    settings = json.loads((tmp_path / "share/jupyter/lab/settings/overrides.json").read_text())
    news = settings["@jupyterlab/apputils-extension:notification"]
    assert news["fetchNews"] == "false" and news["checkForUpdates"] is False


def test_lab_lists_each_lesson_once(tmp_path):
    """`make lab`'s file browser shows a notebook once; its jupytext .py pair stays beside it on disk."""
    import asyncio

    sys.path.insert(0, str(ROOT / "tools"))
    import setup_env
    from labkit.labserver import LessonListingManager

    venv = tmp_path / "venv"
    setup_env.configure_lab(venv)
    server = json.loads((venv / "etc/jupyter/jupyter_server_config.json").read_text())
    assert server["ServerApp"]["contents_manager_class"] == "labkit.labserver.LessonListingManager"

    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    for nb in notebook_pairs()[:2]:
        for suffix in (".ipynb", ".py"):
            (root / "notebooks" / (nb.stem + suffix)).write_bytes(nb.with_suffix(suffix).read_bytes())
    (root / "notebooks" / "helper.py").write_text("x = 1\n")     # a .py without a twin stays listed
    manager = LessonListingManager(root_dir=str(root))
    listing = asyncio.run(manager.get("notebooks"))
    names = sorted(e["name"] for e in listing["content"])
    stems = [nb.stem for nb in notebook_pairs()[:2]]
    assert names == sorted([f"{s}.ipynb" for s in stems] + ["helper.py"]), names
    paired = asyncio.run(manager.get(f"notebooks/{stems[0]}.py", content=False))   # still reachable by path
    assert paired["type"] == "file"


def test_nbval_waits_patiently_for_outputs():
    """nbval's hard-coded 5 s wait for a finished cell's output is raised by the root conftest."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)

    class Cell:
        output_timeout = 5

    cell = Cell()
    conftest.pytest_itemcollected(cell)
    assert cell.output_timeout >= 60


def test_every_labkit_package_ships_in_the_wheel():
    """A subpackage missing from pyproject's explicit list would be absent from a non-editable install."""
    tomllib = pytest.importorskip("tomllib")   # Python >= 3.11
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "labkit").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(found - listed)}"

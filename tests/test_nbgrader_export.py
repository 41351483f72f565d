"""`build --format nbgrader` (labkit.classroom.nbgrader_export), checked with nbgrader itself (a dev dependency).

generate_assignment then autograde on a tiny two-exercise notebook: the reference gets full marks, the
unsolved release zero, and a release with the attacks of issue 16 (custom exception handler, rebound
checker, an object equal to everything) zero as well, because the hidden block of each grade cell is the
lab's hardened check."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit.classroom.build import build
from labkit.classroom.handout import CHECK, SOLUTION, exercise_ids
from labkit.classroom.nbgrader_export import checksum, to_nbgrader

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


@pytest.mark.slow
def test_full_lab_export_has_nbgrader_metadata(tmp_path):
    nbgrader_utils = pytest.importorskip("nbgrader.utils")
    files = build(tmp_path / "course", fmt="nbgrader", assignment="lab")
    notebooks = [p for p in files if p.suffix == ".ipynb"]
    assert (tmp_path / "course" / "nbgrader_config.py").is_file()
    assert len(notebooks) == len(list(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb")))
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        ids = [c.metadata.nbgrader.grade_id for c in nb.cells]
        assert len(ids) == len(set(ids)), path.name
        graded = [c for c in nb.cells if c.metadata.nbgrader.get("grade")]
        assert [c.metadata.nbgrader.grade_id for c in graded] == exercise_ids(nbformat.read(NOTEBOOKS / path.name, as_version=4))
        for c in nb.cells:
            meta = c.metadata.nbgrader
            assert meta["checksum"] == nbgrader_utils.compute_checksum(c), (path.name, meta["grade_id"])
            if meta.get("grade"):
                assert meta["points"] == 1 and meta["locked"] and CHECK.search(c.source)
                assert "### BEGIN HIDDEN TESTS" in c.source and "__lk_rt['reset']()" in c.source
            if meta.get("solution"):
                assert SOLUTION.search(c.source)
            assert c.cell_type != "code" or not c.get("outputs")


def _nbgrader(course: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
def test_nbgrader_generate_and_autograde(tmp_path):
    pytest.importorskip("nbgrader")
    from nbgrader.api import Gradebook
    from test_grading_integrity import NAME, instructor

    from labkit.classroom.nbgrader_export import write_course

    (tmp_path / "inst").mkdir()
    nbformat.write(instructor(), tmp_path / "inst" / NAME)
    course = tmp_path / "course"
    write_course(course, [tmp_path / "inst" / NAME], "ps1")
    r = _nbgrader(course, "generate_assignment", "ps1", "--force")
    assert r.returncode == 0, r.stderr[-2000:]
    release = course / "release" / "ps1" / NAME
    text = release.read_text()
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and "__lk_rt" not in text
    attacker = nbformat.read(release, as_version=4)
    attacker.cells.insert(1, nbformat.v4.new_code_cell(
        "get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n"
        "assert_masked_targets = lambda *a, **k: None\n"
        "class Any:\n    def __eq__(self, o): return True\n    def __iter__(self): return iter([Any()] * 5)\n"
        "def mask_cat(ids):\n    return Any(), Any()\n"
        "class Eq(int):\n    def __eq__(self, o): return True\n"
        "def count_targets(labels):\n    return Eq(0)"))
    for student, nb_path in (("reference", course / "source" / "ps1" / NAME), ("unsolved", release), ("attacker", None)):
        target = course / "submitted" / student / "ps1"
        target.mkdir(parents=True)
        if nb_path is None:
            nbformat.write(attacker, target / NAME)
        else:
            shutil.copy(nb_path, target / NAME)
    r = _nbgrader(course, "autograde", "ps1", "--force")      # creates each student (nbgrader's default)
    assert r.returncode == 0, r.stderr[-2000:]
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {s: (gb.find_submission("ps1", s).score, gb.find_submission("ps1", s).max_score)
                  for s in ("reference", "unsolved", "attacker")}
    assert scores == {"reference": (2.0, 2.0), "unsolved": (0.0, 2.0), "attacker": (0.0, 2.0)}, scores


def test_checksum_changes_with_source_and_points():
    nb = to_nbgrader(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# CHECK: x-1\n### BEGIN HIDDEN TESTS\n"
                                                                                "assert True\n### END HIDDEN TESTS")]))
    cell = nb.cells[0]
    before = checksum(cell)
    cell.metadata.nbgrader["points"] = 2
    assert checksum(cell) != before
    assert json.dumps(cell.metadata.nbgrader)   # plain JSON metadata

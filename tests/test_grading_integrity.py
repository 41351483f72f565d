"""Every way of winning marks without solving anything scores zero (labkit.classroom.grade / gradebook).

A tiny instructor notebook with two exercises (one whose reference is an imported labkit function);
each attack is the unsolved handout plus what a student who wants marks would add. The whole set is
graded as one class (2 processes), which also tests the gradebook; each attack then has its own test
reading that class's reports. The student's files must stay byte-identical and the instructor's
folder and the labkit package untouched. The last test does the same with notebook 00's handout and
the attacks of issue 16, next to the reference notebook graded to full marks.
"""
import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit.classroom import inject, runtime, sandbox
from labkit.classroom.gradebook import digest, grade_class
from labkit.classroom.grade import graded_notebook, load_submission
from labkit.classroom.handout import make_student_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAME = "98_integrity.ipynb"

SETUP = ("from labkit.checks import assert_masked_targets\nfrom labkit.paradigms.masked import mask_positions\n"
         "record = [1, 42, 95, 2]")
MASK_SOLUTION = "def mask_cat(ids):\n    ### BEGIN SOLUTION\n    x, y = list(ids), [-100] * len(ids)\n    x[2], y[2] = 3, ids[2]\n    return x, y\n    ### END SOLUTION"
MASK_CHECK = ("# CHECK: 98-mask\nx, y = mask_cat(record)\nassert_masked_targets(x, y, record, 3)\n### BEGIN HIDDEN TESTS\n"
              "ref = mask_positions([5, 6, 7, 8, 9], [2], 3)\nx2, y2 = mask_cat([5, 6, 7, 8, 9])\n"
              "assert list(x2) == ref['input_ids'] and list(y2) == ref['labels'], 'mask position 2 only'\n### END HIDDEN TESTS")
COUNT_SOLUTION = "def count_targets(labels):\n    ### BEGIN SOLUTION\n    return sum(1 for y in labels if y != -100)\n    ### END SOLUTION"
COUNT_CHECK = ("# CHECK: 98-count\nassert count_targets([-100, 5]) == 1\n### BEGIN HIDDEN TESTS\n"
               "assert count_targets([-100, 5, -100, 7, 9]) == 3, 'count every label that is not -100'\n### END HIDDEN TESTS")

# name -> (cell inserted after the setup cell, replacement of the two solution cells or None)
GARBAGE = ("def mask_cat(ids):\n    return [0], [0]\n\ndef count_targets(labels):\n    return -1")
ATTACKS = {
    "custom_exc": ("get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)", None),
    "custom_exc_in_solution": ("", ("def mask_cat(ids):\n    get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n"
                                    "    raise NotImplementedError()", None)),
    "post_run_cell_clears": ("from IPython.display import clear_output\n"
                             "get_ipython().events.register('post_run_cell', lambda *a: clear_output())", None),
    "pre_run_cell_patch": ("def _hook(info):\n    get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n"
                           "get_ipython().events.register('pre_run_cell', _hook)", None),
    "no_traceback": ("ip = get_ipython()\nip.showtraceback = lambda *a, **k: None\nip._showtraceback = lambda *a, **k: None", None),
    "input_transformer": ("get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])", None),
    "ast_transformer": ("import ast\nclass Gut(ast.NodeTransformer):\n    def visit_Module(self, node):\n"
                        "        return ast.Module(body=[ast.Pass()], type_ignores=[])\nget_ipython().ast_transformers.append(Gut())", None),
    "rebind_checker": ("assert_masked_targets = lambda *a, **k: None\nmask_positions = lambda *a, **k: {'input_ids': [0], 'labels': [0]}\n"
                       + GARBAGE, None),
    "patch_checker_module": ("import labkit.checks, labkit.paradigms.masked\n"
                             "labkit.checks.assert_masked_targets = lambda *a, **k: None\n"
                             "labkit.paradigms.masked.mask_positions = lambda *a, **k: {'input_ids': [0], 'labels': [0]}\n"
                             + GARBAGE, None),
    "patch_builtins": ("import builtins\nbuiltins.list = lambda *a: [0]\n" + GARBAGE, None),
    "equal_to_everything": ("class Any:\n    def __eq__(self, other): return True\n    def __ne__(self, other): return False\n"
                            "    def __iter__(self): return iter([Any()] * 4)\n    def __len__(self): return 4\n"
                            "    def __getitem__(self, i): return Any()\n"
                            "def mask_cat(ids):\n    return Any(), Any()\n"
                            "class Eq(int):\n    def __eq__(self, other): return True\n"
                            "def count_targets(labels):\n    return Eq(0)", None),
    "calls_reference": ("def mask_cat(ids):\n    r = mask_positions(ids, [2], 3)\n    return r['input_ids'], r['labels']\n"
                        "count_targets = labkit_count = __import__('labkit.checks', fromlist=['x']).assert_has_targets", None),
    "rewrite_visible_check": ("", "check-pass"),
    "delete_check_cells": ("", "delete-checks"),
    "read_solutions": ("import json, glob\nsrc = [p for p in glob.glob('{SRC}/*.ipynb')]\n"
                       "for c in json.load(open(src[0]))['cells']:\n"
                       "    s = ''.join(c['source']) if isinstance(c['source'], list) else c['source']\n"
                       "    if 'BEGIN SOLUTION' in s:\n        exec(s)", None),
    "rewrite_instructor_checks": ("import json\np = '{SRC}/" + NAME + "'\nnb = json.load(open(p))\n"
                                  "for c in nb['cells']:\n    if 'CHECK' in str(c['source']):\n"
                                  "        c['source'] = '# CHECK: ' + str(c['source']).split('CHECK: ')[1].split(chr(10))[0][:8]\n"
                                  "json.dump(nb, open(p, 'w'))", None),
    # a notebook that never finishes (a CPU-burning loop is tested in test_assignments; sleeping keeps the
    # 20 s wait from slowing the rest of the suite)
    "hang": ("import time\nwhile True:\n    time.sleep(0.5)", None),
    "kernel_exit": ("import os\nos._exit(1)", None),
}


def instructor():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in
                                         (SETUP, MASK_SOLUTION, MASK_CHECK, COUNT_SOLUTION, COUNT_CHECK)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def submission(handout, name, src):
    nb = nbformat.reads(nbformat.writes(handout), as_version=4)
    added, solution = ATTACKS[name]
    added = added.replace("{SRC}", str(src))
    if solution == "check-pass":
        for c in nb.cells:
            if "# CHECK:" in c.source:
                c.source = c.source.split("\n")[0] + "\npass"
    elif solution == "delete-checks":
        nb.cells = [c for c in nb.cells if "# CHECK:" not in c.source]
    elif solution is not None:
        nb.cells[1].source = solution[0]
    if added:
        for fn in ("mask_cat", "count_targets"):       # the attack's own definitions replace the blank solutions
            if f"def {fn}(" in added or f"{fn} =" in added:
                nb.cells = [c for c in nb.cells if not c.source.startswith(f"def {fn}(")]
        nb.cells.insert(1, nbformat.v4.new_code_cell(added))
    return nb


@pytest.fixture(scope="module")
def klass(tmp_path_factory):
    """The attacks, the reference and the plain unsolved handout graded as one class of students."""
    base = tmp_path_factory.mktemp("integrity")
    src, folder, out = base / "instructor", base / "class", base / "grades"
    src.mkdir()
    folder.mkdir()
    nbformat.write(instructor(), src / NAME)
    handout = make_student_notebook(instructor(), NAME)
    students = {name: submission(handout, name, src) for name in ATTACKS}
    students["unsolved"] = handout
    students["reference"] = instructor()
    hashes = {}
    for name, nb in students.items():
        (folder / name).mkdir()
        path = folder / name / NAME
        nbformat.write(nb, path)
        hashes[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    before = digest([src])
    grade_class(folder, out, src, jobs=2, timeout=20, total_timeout=60, progress=False)
    rows = {r["student"]: r for r in csv.DictReader(open(out / "gradebook.csv"))}
    reports = {p.stem: json.loads(p.read_text()) for p in (out / "reports").glob("*.json")}
    return {"rows": rows, "reports": reports, "hashes": hashes, "folder": folder, "src": src,
            "before": before, "after": digest([src])}


@pytest.mark.slow
def test_reference_gets_full_marks_and_unsolved_zero(klass):
    assert klass["rows"]["reference"]["score"] == "2", klass["reports"]["reference"]
    assert klass["rows"]["unsolved"]["score"] == "0"
    assert (klass["rows"]["unsolved"]["98-mask"], klass["rows"]["reference"]["98-count"]) == ("0", "1")


@pytest.mark.slow
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_scores_zero(klass, attack):
    if attack in ("read_solutions", "rewrite_instructor_checks") and not sandbox.available():
        pytest.skip("reading the instructor's files by absolute path is blocked only where Linux allows the namespace "
                    "sandbox (unshare -rm); grade on such a machine")
    row = klass["rows"][attack]
    assert row["score"] == "0", (attack, klass["reports"][attack])
    assert int(row["max"]) in (0, 2)


@pytest.mark.slow
def test_student_files_byte_identical_and_instructor_untouched(klass):
    for name, h in klass["hashes"].items():
        path = klass["folder"] / name / NAME
        assert hashlib.sha256(path.read_bytes()).hexdigest() == h, name
    if sandbox.available():
        assert klass["before"] == klass["after"], "the instructor's folder changed"


@pytest.mark.slow
def test_reports_carry_hash_time_feedback_and_statuses(klass):
    rep = klass["reports"]["unsolved"]["notebooks"][0]
    assert rep["sha256"] == klass["hashes"]["unsolved"] and rep["graded_at"].endswith("+00:00")
    assert all("NotImplementedError" in e["message"] for e in rep["exercises"])
    assert klass["rows"]["hang"]["status"] == "timeout"
    assert klass["rows"]["kernel_exit"]["status"] == "crashed"
    ref = klass["reports"]["calls_reference"]["notebooks"][0]["exercises"]
    assert "mask_positions" in ref[0]["message"] and "library function" in ref[1]["message"]
    assert "plain values" in klass["reports"]["equal_to_everything"]["notebooks"][0]["exercises"][0]["message"]
    assert "custom exception handler" in klass["reports"]["custom_exc"]["notebooks"][0]["flags"]


@pytest.mark.slow
def test_invalid_files_are_refused_before_grading(tmp_path):
    (tmp_path / "a.ipynb").write_text("{not json")
    (tmp_path / "b.ipynb").write_text(json.dumps({"hello": 1}))
    assert load_submission(tmp_path / "a.ipynb")[1][0] == "invalid-json"
    assert load_submission(tmp_path / "b.ipynb")[1][0] == "not-a-notebook"
    assert load_submission(tmp_path / "c.ipynb")[1][0] == "missing"
    cli = subprocess.run([sys.executable, "-m", "labkit.assignments", "grade", str(tmp_path / "a.ipynb"), "--report",
                          str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and json.loads((tmp_path / "r.json").read_text())["status"] == "invalid-json"
    nbformat.write(instructor(), tmp_path / NAME)
    cli = subprocess.run([sys.executable, "-m", "labkit.assignments", "grade", str(tmp_path / NAME), "--report",
                          str(tmp_path / "missing-dir" / "r.json")], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and "cannot write the report" in cli.stderr


def test_graded_copy_restores_locked_cells_and_injects_fresh_checks():
    handout = make_student_notebook(instructor(), NAME)
    handout.cells[0].source = "record = [3, 3, 3, 3]"                   # a locked cell edited by the student
    handout.cells[2].source = "# CHECK: 98-mask\npass"                  # a visible check emptied
    graded, where, _, ids, analysis = graded_notebook(handout, instructor(), "n0nce")
    sources = [c.source for c in graded.cells]
    assert SETUP in sources and "record = [3, 3, 3, 3]" not in sources
    check = graded.cells[where["98-mask"]].source
    assert "__lk_ref_assert_masked_targets" in check and "'fresh'" in check and "__lk_stu_mask_cat" in check
    assert analysis.checks["98-mask"].references, "mask_positions is the reference of 98-mask"
    assert "reset" in graded.cells[where["98-mask"] - 1].source
    assert ids == ["98-mask", "98-count"]


def test_plain_values_refuse_objects_that_compare_equal_to_everything():
    import torch

    class Any:
        def __eq__(self, other):
            return True

    class Sneaky(torch.Tensor):
        pass

    trusted = inject.analyse(instructor()).trusted
    with pytest.raises(AssertionError, match="plain values"):
        runtime.plain([Any()], trusted, [])
    with pytest.raises(AssertionError, match="tensor subclass"):
        runtime.plain(torch.zeros(2).as_subclass(Sneaky), trusted, [])
    assert runtime.plain({"a": (1, 2.0, torch.ones(1))}, trusted, [])["a"][1] == 2.0
    with pytest.raises(AssertionError, match="library function"):
        runtime.Student("mask_cat", __import__("labkit.paradigms.masked", fromlist=["x"]).mask_positions, [], trusted)


@pytest.mark.slow
def test_notebook_00_attacks_score_zero_and_reference_full_marks(tmp_path):
    """Issue 16's attacks on notebook 00's handout; the reference notebook graded in the same class run."""
    from labkit.classroom.build import build

    build(tmp_path / "handout")
    handout = nbformat.read(tmp_path / "handout" / "00_tour.ipynb", as_version=4)
    attack = ("get_ipython().set_custom_exc((BaseException,), lambda *a, **k: None)\n"
              "from IPython.display import clear_output\n"
              "get_ipython().events.register('post_run_cell', lambda *a: clear_output())\n"
              "import labkit.checks\nlabkit.checks.assert_masked_targets = lambda *a, **k: None\n"
              "assert_masked_targets = lambda *a, **k: None\n")
    handout.cells.insert(1, nbformat.v4.new_code_cell(attack))
    folder = tmp_path / "class"
    for name in ("attacker", "reference"):
        (folder / name).mkdir(parents=True)
    nbformat.write(handout, folder / "attacker" / "00_tour.ipynb")
    (folder / "reference" / "00_tour.ipynb").write_bytes((NOTEBOOKS / "00_tour.ipynb").read_bytes())
    h = hashlib.sha256((folder / "attacker" / "00_tour.ipynb").read_bytes()).hexdigest()
    before = digest([NOTEBOOKS / "00_tour.ipynb"])
    grade_class(folder, tmp_path / "grades", NOTEBOOKS, jobs=2, timeout=300, total_timeout=900, progress=False)
    rows = {r["student"]: r for r in csv.DictReader(open(tmp_path / "grades" / "gradebook.csv"))}
    assert rows["attacker"]["score"] == "0" and rows["attacker"]["max"] == "2", rows
    assert rows["reference"]["score"] == rows["reference"]["max"] == "2", rows
    assert hashlib.sha256((folder / "attacker" / "00_tour.ipynb").read_bytes()).hexdigest() == h
    assert digest([NOTEBOOKS / "00_tour.ipynb"]) == before


def test_sandbox_probe_is_cached_and_boolean():
    assert sandbox.available() in (True, False) and sandbox.available.cache_info().currsize == 1


@pytest.mark.slow
def test_whole_notebook_time_limit(tmp_path):
    """Cells that each stay under the per-cell limit still stop at the notebook's limit."""
    from labkit.classroom.grade import grade

    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(instructor(), src / NAME)
    nb = make_student_notebook(instructor(), NAME)
    for _ in range(4):
        nb.cells.insert(1, nbformat.v4.new_code_cell("import time\ntime.sleep(4)"))
    nbformat.write(nb, tmp_path / NAME)
    report = grade(tmp_path / NAME, src, timeout=60, total_timeout=10)
    assert report.status == "timeout" and "the notebook ran longer" in report.message, report
    assert report.score == 0 and all("not run" in e.message for e in report.exercises)

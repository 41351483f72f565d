"""Student versions and autograding (labkit.assignments, labkit.classroom.handout / grade).

The reference-gets-full-marks test of notebook 00 lives in test_grading_integrity.py (graded in one
class run with the attacks on its handout)."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit.assignments import (CHECK, build, exercise_ids, grade, make_student_notebook, student_source)
from labkit.checks import ContractError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
ALL = sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb"))


def test_student_source_keeps_indentation_and_drops_hidden_tests():
    src = ("def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\n\n"
           "check(f)\n### BEGIN HIDDEN TESTS\nsecret(f)\n### END HIDDEN TESTS\nprint('ok')")
    out = student_source(src)
    assert "    # YOUR CODE HERE\n    raise NotImplementedError()\n" in out
    assert "return x + y" not in out and "secret" not in out and "check(f)" in out and out.endswith("print('ok')")


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_notebook_has_two_exercises_with_checks(path):
    nb = nbformat.read(path, as_version=4)
    ids = exercise_ids(nb)
    solutions = sum(c.source.count("### BEGIN SOLUTION") for c in nb.cells if c.cell_type == "code")
    hidden = sum(c.source.count("### BEGIN HIDDEN TESTS") for c in nb.cells if c.cell_type == "code")
    need = 1 if path.name[2].isalpha() else 2             # new NNx_ notebooks need one exercise, the core ones two
    assert len(ids) >= need and len(set(ids)) == len(ids), f"CHECK ids: {ids}"
    assert solutions >= need and hidden >= need
    student = make_student_notebook(nb)
    for cell in student.cells:
        if cell.cell_type == "code":
            compile(cell.source, path.name, "exec")          # the student version is valid Python
            assert "### BEGIN SOLUTION" not in cell.source and "HIDDEN TESTS" not in cell.source


@pytest.mark.slow
def test_build_is_deterministic_and_refuses_existing_dir(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    files_a, files_b = build(a), build(b)
    assert [p.name for p in files_a] == [p.name for p in files_b]
    for fa, fb in zip(files_a, files_b):
        assert fa.read_bytes() == fb.read_bytes()
    with pytest.raises(ContractError, match="already exists"):
        build(a)
    assert build(a, force=True)
    cli = subprocess.run([sys.executable, "-m", "labkit.assignments", "build", "--out", str(a)], capture_output=True, text=True)
    assert cli.returncode == 2 and "--force" in cli.stderr


def tiny_pair(tmp_path, solution, timeout_body=None):
    """A small instructor notebook and a student copy whose solution is `solution`."""
    cells = [
        nbformat.v4.new_code_cell("from labkit.checks import assert_masked_targets\nrecord = [1, 42, 95, 2]"),
        nbformat.v4.new_code_cell("def mask_cat(ids):\n    ### BEGIN SOLUTION\n    x, y = list(ids), [-100] * len(ids)\n"
                                  "    x[2], y[2] = 3, ids[2]\n    return x, y\n    ### END SOLUTION"),
        nbformat.v4.new_code_cell("# CHECK: tiny-mask\nx, y = mask_cat(record)\n### BEGIN HIDDEN TESTS\n"
                                  "assert_masked_targets(x, y, record, 3)\n### END HIDDEN TESTS\nprint('ok')"),
        nbformat.v4.new_code_cell("# CHECK: tiny-second\n### BEGIN HIDDEN TESTS\nassert 1 + 1 == 2\n### END HIDDEN TESTS"),
    ]
    src = tmp_path / "src"
    src.mkdir()
    instructor = nbformat.v4.new_notebook(cells=cells)
    instructor.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(instructor, src / "99_tiny.ipynb")
    student = make_student_notebook(instructor)
    student.cells[1].source = student.cells[1].source.replace("# YOUR CODE HERE\n    raise NotImplementedError()", solution)
    path = tmp_path / "99_tiny.ipynb"
    nbformat.write(student, path)
    return src, path


@pytest.mark.slow
def test_wrong_solution_gets_the_misconception_message(tmp_path):
    # a typical mistake: every position gets a label, so unmasked tokens are graded too
    src, student = tiny_pair(tmp_path, "x = list(ids); x[2] = 3\n    return x, list(ids)")
    before = hashlib.sha256(student.read_bytes()).hexdigest()
    report = grade(student, src, timeout=60)
    assert report.status == "completed" and report.score == 1 and report.max_score == 2
    first = report.exercises[0]
    assert not first.passed and "unmasked position has a label" in first.message
    assert hashlib.sha256(student.read_bytes()).hexdigest() == before, "the student's file must not change"


@pytest.mark.slow
def test_infinite_loop_times_out_cleanly(tmp_path):
    src, student = tiny_pair(tmp_path, "while True:\n        pass")
    report_path = tmp_path / "report.json"
    cli = subprocess.run([sys.executable, "-m", "labkit.assignments", "grade", str(student), "--source", str(src),
                          "--timeout", "4", "--report", str(report_path)], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    report = json.loads(report_path.read_text())
    assert report["status"] == "timeout" and report["score"] == 0 and report["max_score"] == 2
    assert {"score", "max_score", "exercises"} <= set(report)
    assert all(not e["passed"] for e in report["exercises"])


@pytest.mark.slow
def test_student_version_runs_until_its_first_exercise(tmp_path):
    """Executed top to bottom, the first error of a student notebook is NotImplementedError."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    build(tmp_path / "out")
    nb = nbformat.read(tmp_path / "out" / "00_tour.ipynb", as_version=4)
    with pytest.raises(CellExecutionError) as err:
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert err.value.ename == "NotImplementedError"
    failed = [c for c in nb.cells if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    first_exercise = next(c for c in nb.cells if c.cell_type == "code" and
                          ("# YOUR CODE HERE" in c.source or CHECK.search(c.source)))
    first_check = next(c for c in nb.cells if c.cell_type == "code" and CHECK.search(c.source))
    assert len(failed) == 1 and failed[0] in (first_exercise, first_check)


def test_handouts_carry_no_outputs_and_no_ledger(tmp_path):
    """An output of a solved notebook can state an answer (13's bug cells print the grader's verdict,
    which names the fix): handouts clear every output and the measured ledger."""
    for path in build(tmp_path / "out"):
        if path.suffix != ".ipynb":
            continue
        nb = nbformat.read(path, as_version=4)
        assert "claims" not in nb.metadata.get("labkit", {}) and nb.metadata["labkit"]["source"] == path.name
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name
                assert cell.metadata["labkit"]["kind"] in ("solution", "check", "locked")


def test_scheduled_mix_checkers_accept_every_correct_coin():
    """07's mix_prefix: `rand >= alpha` (the reference), `rand < 1 - alpha` and bernoulli all pass; one coin per
    sequence fails (issue 16: the hidden test compared bit-for-bit with one way of drawing)."""
    import torch

    from labkit.exercises.autoregressive import check_scheduled_mix, check_scheduled_mix_on

    def mixer(coin_of):
        def mix(x, p, a, s, g):
            coin = coin_of(x, a, g)
            coin[:, :s] = False
            return torch.where(coin, torch.cat([x[:, :1], p[:, :-1]], 1), x)
        return mix

    ways = [lambda x, a, g: torch.rand(x.shape, generator=g) >= a,
            lambda x, a, g: torch.rand(x.shape, generator=g) < 1 - a,
            lambda x, a, g: torch.bernoulli(torch.full(x.shape, 1.0 - a), generator=g).bool()]
    x = torch.randint(0, 50, (64, 20), generator=torch.Generator().manual_seed(1))
    p = torch.randint(0, 50, (64, 20), generator=torch.Generator().manual_seed(2))
    for way in ways:
        check_scheduled_mix(mixer(way))
        check_scheduled_mix_on(mixer(way), x, p, 0.6, 5)
    per_sequence = mixer(lambda x, a, g: (torch.rand(x.shape[0], 1, generator=g) < 1 - a).expand_as(x).clone())
    with pytest.raises(AssertionError, match="per TOKEN"):
        check_scheduled_mix(per_sequence)


def test_build_cli_nbgrader_format(tmp_path):
    cli = subprocess.run([sys.executable, "-m", "labkit.assignments", "build", "--out", str(tmp_path / "c"), "--format",
                          "nbgrader", "--assignment", "lab"], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert (tmp_path / "c" / "source" / "lab" / "00_tour.ipynb").is_file()
    assert (tmp_path / "c" / "nbgrader_config.py").is_file()

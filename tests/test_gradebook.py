"""A class at once (labkit.classroom.gradebook): discovery, gradebook CSV and JSON reports, refusals.

The parallel grading itself (2 processes, a hang and a crash among the students) runs in
test_grading_integrity.py's class fixture; these tests need no kernel."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit.classroom.grade import ExerciseResult, GradeReport
from labkit.classroom.gradebook import grade_class, submissions, write_gradebook
from labkit.contracts import ContractError


def test_submissions_accepts_folders_and_files(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "03_x.ipynb").write_text("{}")
    (tmp_path / "alice" / "00_y.ipynb").write_text("{}")
    (tmp_path / "bob.ipynb").write_text("{}")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "notes.txt").write_text("")
    assert [(s, p.name) for s, p in submissions(tmp_path)] == [("alice", "00_y.ipynb"), ("alice", "03_x.ipynb"),
                                                               ("bob", "bob.ipynb")]
    with pytest.raises(ContractError, match="no submissions"):
        submissions(tmp_path / ".hidden")


def test_gradebook_csv_and_one_json_per_student(tmp_path):
    reports = [GradeReport("00_tour.ipynb", 1, 2, "completed", 3.0,
                           [ExerciseResult("00-a", True, 1, 1, "passed"), ExerciseResult("00-b", False, 0, 1, "not attempted")],
                           "", "alice", "ab" * 32, "2026-01-01T00:00:00+00:00"),
               GradeReport("x.ipynb", 0, 0, "invalid-json", 0.0, [], "not JSON", "bob/../evil", "cd" * 32, "t")]
    (tmp_path / "reports").mkdir()
    write_gradebook(reports, tmp_path)
    rows = list(csv.reader(open(tmp_path / "gradebook.csv")))
    assert rows[0] == ["student", "notebook", "score", "max", "status", "00-a", "00-b"]
    assert rows[1] == ["alice", "00_tour.ipynb", "1", "2", "completed", "1", "0"]
    assert rows[2][:5] == ["bob/../evil", "x.ipynb", "0", "0", "invalid-json"]
    alice = json.loads((tmp_path / "reports" / "alice.json").read_text())
    assert alice["notebooks"][0]["sha256"] == "ab" * 32 and alice["notebooks"][0]["exercises"][1]["message"] == "not attempted"
    assert (tmp_path / "reports" / "bob_.._evil.json").is_file()          # a student id never escapes reports/


@pytest.mark.slow
def test_class_refusals_come_before_any_grading(tmp_path):
    (tmp_path / "class" / "alice").mkdir(parents=True)
    (tmp_path / "class" / "alice" / "00_tour.ipynb").write_text("{broken")
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), src / "00_tour.ipynb")
    with pytest.raises(ContractError, match="inside the submissions folder"):
        grade_class(tmp_path / "class", tmp_path / "class" / "grades", src)
    with pytest.raises(ContractError, match="cannot write the gradebook"):
        grade_class(tmp_path / "class", Path("/proc/no-such-dir/grades"), src)
    reports = grade_class(tmp_path / "class", tmp_path / "grades", src, progress=False)
    assert [(r.student, r.status) for r in reports] == [("alice", "invalid-json")]
    assert "invalid-json" in (tmp_path / "grades" / "gradebook.csv").read_text()


@pytest.mark.slow
def test_cli_grades_a_folder(tmp_path):
    (tmp_path / "class").mkdir()
    (tmp_path / "class" / "carol.ipynb").write_text(json.dumps({"cells": "no"}))
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), src / "00_tour.ipynb")
    cli = subprocess.run([sys.executable, "-m", "labkit.assignments", "grade", str(tmp_path / "class"), "--out",
                          str(tmp_path / "g"), "--source", str(src), "--quiet"], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert "not-a-notebook" in (tmp_path / "g" / "gradebook.csv").read_text()
    cli = subprocess.run([sys.executable, "-m", "labkit.assignments", "grade", str(tmp_path / "class")],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 2 and "--out" in cli.stderr

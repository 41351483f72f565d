"""Student versions and autograding for the lab's notebooks (command line; the code is in labkit.classroom).

    python -m labkit.assignments build --out DIR [--format labkit|nbgrader] [--force] [--source notebooks/]
    python -m labkit.assignments grade STUDENT.ipynb [--report out.json] [--student ID] [--timeout 300]
    python -m labkit.assignments grade CLASS_FOLDER --out GRADES_DIR [--jobs 2]

`build` writes handouts: solutions replaced by `# YOUR CODE HERE` / `raise NotImplementedError()`,
hidden tests removed, every output cleared (labkit.classroom.handout); `--format nbgrader` writes an
nbgrader source assignment instead (labkit.classroom.nbgrader_export). `grade` runs a copy of a
submission in a fresh temporary directory with the instructor's checks injected and scores each check
by the kernel's execution status (labkit.classroom.grade); given a folder, it grades the whole class in
parallel processes into a gradebook (labkit.classroom.gradebook). The student's files are never modified.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from labkit.classroom.grade import ExerciseResult, GradeReport, default_total, grade, print_report  # noqa: F401  (public API)
from labkit.classroom.build import build  # noqa: F401
from labkit.classroom.handout import (CHECK, DEFAULT_SOURCE, HIDDEN, SOLUTION, exercise_ids,  # noqa: F401
                                      instructor_notebooks, make_student_notebook, student_source)
from labkit.contracts import ContractError

__all__ = ["CHECK", "DEFAULT_SOURCE", "HIDDEN", "SOLUTION", "ExerciseResult", "GradeReport", "build", "exercise_ids", "grade",
           "instructor_notebooks", "main", "make_student_notebook", "print_report", "student_source"]


def _writable(path: Path, protect: Path) -> None:
    """Refuse, before grading, a report path that cannot be written or would overwrite the submission."""
    path = Path(path)
    if path.resolve() == Path(protect).resolve():
        raise ContractError("--report would overwrite the student's notebook; choose another path")
    if path.is_dir():
        raise ContractError(f"--report {path} is a folder; give a file name such as report.json")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ContractError(f"cannot write the report to {path} (missing or read-only folder); fix: choose a writable path")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.assignments", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write student versions of every notebook")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    b.add_argument("--force", action="store_true", help="write into an existing directory")
    b.add_argument("--format", default="labkit", choices=["labkit", "nbgrader"])
    b.add_argument("--assignment", default="paradigm-lab", help="nbgrader assignment name (--format nbgrader)")
    g = sub.add_parser("grade", help="grade one student notebook, or a folder with one sub-folder or file per student")
    g.add_argument("notebook", type=Path)
    g.add_argument("--report", type=Path, help="one notebook: write the JSON report here")
    g.add_argument("--out", type=Path, help="a class folder: write gradebook.csv and reports/ here")
    g.add_argument("--jobs", type=int, default=2, help="a class folder: submissions graded at once")
    g.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    g.add_argument("--student", default="", help="the student id (seeds per-student exercises such as notebook 13's bug hunt)")
    g.add_argument("--timeout", type=float, default=300.0, help="seconds per cell")
    g.add_argument("--total-timeout", type=float, default=None, help="seconds for the whole notebook (default 4 x --timeout)")
    g.add_argument("--sandbox", default="auto", choices=["auto", "on", "off"],
                   help="run the kernel in a mount namespace that hides the instructor's files (auto: when Linux allows it)")
    g.add_argument("--hide", type=Path, action="append", default=[], help=argparse.SUPPRESS)
    g.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for path in build(args.out, args.source, args.force, args.format, args.assignment):
                print(path)
            return 0
        if not args.notebook.exists():
            raise ContractError(f"{args.notebook} does not exist")
        if args.notebook.is_dir():
            from labkit.classroom.gradebook import grade_class

            if args.out is None:
                raise ContractError("grading a folder needs --out GRADES_DIR (gradebook.csv and reports/ go there)")
            reports = grade_class(args.notebook, args.out, args.source, args.jobs, args.timeout,
                                  args.total_timeout or default_total(args.timeout), args.sandbox, progress=not args.quiet)
            done = sum(r.status == "completed" for r in reports)
            print(f"{len(reports)} notebooks graded ({done} completed); gradebook: {args.out / 'gradebook.csv'}")
            return 0
        if args.report:
            _writable(args.report, args.notebook)
        report = grade(args.notebook, args.source, args.timeout, args.total_timeout, args.student, args.sandbox, args.hide)
        if not args.quiet:
            print_report(report)
        if args.report:
            with tempfile.NamedTemporaryFile("w", dir=args.report.parent if str(args.report.parent) else ".",
                                             delete=False, suffix=".tmp") as f:
                f.write(json.dumps(report.to_json(), indent=2) + "\n")
            os.replace(f.name, args.report)
        return 0
    except ContractError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

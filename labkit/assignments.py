"""Student versions and autograding for the lab's notebooks.

    python -m labkit.assignments build --out DIR [--force] [--source notebooks/]
    python -m labkit.assignments grade STUDENT.ipynb [--report out.json] [--timeout 300] [--source notebooks/]

Exercises are written once, in the instructor notebooks:

    def student_function(...):
        ### BEGIN SOLUTION
        ...reference solution...
        ### END SOLUTION

    # CHECK: 03-external-builder            <- the cell that grades one exercise (1 point)
    visible checks
    ### BEGIN HIDDEN TESTS
    hidden checks
    ### END HIDDEN TESTS

`build` replaces each solution by `# YOUR CODE HERE` / `raise NotImplementedError()` at the same
indentation, removes hidden tests and clears the outputs of the cells it changed. `grade` runs a
copy of the student's notebook in which every CHECK cell is replaced by the instructor's full cell
(hidden tests included); an exercise passes when its CHECK cell runs without error. The student's
file is never modified; a notebook that hangs or crashes is reported, not fatal.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labkit.checks import ContractError

SOLUTION = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION[ \t]*$\n(?:.*\n)*?[ \t]*### END SOLUTION[ \t]*(?:\n|$)", re.M)
HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[ \t]*$\n(?:.*\n)*?[ \t]*### END HIDDEN TESTS[ \t]*(?:\n|$)", re.M)
CHECK = re.compile(r"^# CHECK: *(?P<id>[\w.-]+)\s*$", re.M)
DEFAULT_SOURCE = Path(__file__).resolve().parents[1] / "notebooks"


# ----------------------------------------------------------------------------- build

def student_source(source: str) -> str:
    """One cell's source with solutions replaced and hidden tests removed."""
    def blank(m: re.Match) -> str:
        indent = m.group("indent")
        return f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError()\n"

    out = SOLUTION.sub(blank, source)
    return HIDDEN.sub("", out)


def exercise_ids(nb) -> list[str]:
    """The CHECK ids of a notebook, in order."""
    return [m.group("id") for c in nb.cells if c.cell_type == "code" for m in CHECK.finditer(c.source)]


def make_student_notebook(nb):
    """A student copy of an instructor notebook (nbformat node); the input is not changed."""
    student = copy.deepcopy(nb)
    for cell in student.cells:
        if cell.cell_type != "code":
            continue
        new = student_source(cell.source)
        if new != cell.source:
            cell.source = new
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    student.metadata.pop("widgets", None)
    return student


def instructor_notebooks(source: Path) -> list[Path]:
    paths = sorted(p for p in Path(source).glob("[0-9][0-9]*_*.ipynb"))
    if not paths:
        raise ContractError(f"no notebooks NN_topic.ipynb in {source}; fix: pass --source pointing at the lab's notebooks/")
    return paths


def build(out: Path, source: Path = DEFAULT_SOURCE, force: bool = False) -> list[Path]:
    """Write the student version of every notebook into `out`; returns the files written.

    Refuses an existing `out` unless force=True (then only the files it writes are replaced).
    """
    import nbformat

    out = Path(out)
    if out.exists() and not force:
        raise ContractError(f"{out} already exists; refusing to overwrite it. Fix: choose a new --out, or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    written, lines = [], ["# Student notebooks", "", "| notebook | exercises |", "|---|---|"]
    for path in instructor_notebooks(source):
        nb = nbformat.read(path, as_version=4)
        student = make_student_notebook(nb)
        target = out / path.name
        nbformat.write(student, target)
        written.append(target)
        lines.append(f"| {path.name} | {', '.join(exercise_ids(nb)) or '-'} |")
    lines += ["", "Fill in every `# YOUR CODE HERE`, run the notebook top to bottom, then grade it with",
              "`python -m labkit.assignments grade NN_topic.ipynb`."]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    written.append(out / "README.md")
    return written


# ----------------------------------------------------------------------------- grade

@dataclass
class ExerciseResult:
    id: str
    passed: bool
    points: int
    max_points: int
    message: str = ""


@dataclass
class GradeReport:
    notebook: str
    score: int
    max_score: int
    status: str                      # completed | timeout | crashed | no-exercises
    seconds: float
    exercises: list = field(default_factory=list)
    message: str = ""


def _reference_for(student_path: Path, source: Path):
    import nbformat

    ref = Path(source) / student_path.name
    if not ref.exists():
        raise ContractError(f"no instructor notebook {ref.name} in {source}; fix: keep the student's file name "
                            "(NN_topic.ipynb) or pass --source")
    return nbformat.read(ref, as_version=4)


def grading_notebook(student, reference):
    """The student's cells, with every CHECK cell replaced by the instructor's full CHECK cell."""
    checks = {}
    for cell in reference.cells:
        if cell.cell_type == "code":
            m = CHECK.search(cell.source)
            if m:
                source = re.sub(r"^[ \t]*### (BEGIN|END) HIDDEN TESTS[ \t]*\n?", "", cell.source, flags=re.M)
                checks[m.group("id")] = source
    graded = copy.deepcopy(student)
    seen = set()
    for cell in graded.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs, cell.execution_count = [], None
        m = CHECK.search(cell.source)
        if m and m.group("id") in checks:
            cell.source = checks[m.group("id")]
            seen.add(m.group("id"))
    missing = [i for i in checks if i not in seen]
    return graded, list(checks), missing


def _error_of(cell) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"{out.get('ename')}: {out.get('evalue')}"
    return None


def grade(student_path: Path, source: Path = DEFAULT_SOURCE, timeout: float = 300.0) -> GradeReport:
    """Execute a copy of the student's notebook with the hidden tests and score it (never raises
    for a broken, hanging or crashing notebook: that is reported)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    student_path = Path(student_path)
    student = nbformat.read(student_path, as_version=4)
    reference = _reference_for(student_path, source)
    graded, ids, missing = grading_notebook(student, reference)
    if not ids:
        return GradeReport(student_path.name, 0, 0, "no-exercises", 0.0, [], "the instructor notebook has no CHECK cells")
    status, message = "completed", ""
    start = time.perf_counter()
    client = NotebookClient(graded, timeout=timeout, kernel_name="python3", allow_errors=True, record_timing=False,
                            resources={"metadata": {"path": str(Path(source).resolve())}})
    try:
        client.execute()
    except CellTimeoutError:
        status, message = "timeout", f"a cell ran longer than {timeout:.0f} s; later exercises were not graded"
    except DeadKernelError as err:
        status, message = "crashed", f"the kernel died: {err}"
    except Exception as err:  # noqa: BLE001 - any failure of the run is reported, not raised
        status, message = "crashed", f"{type(err).__name__}: {err}"
    seconds = time.perf_counter() - start
    results = []
    by_id = {}
    for cell in graded.cells:
        if cell.cell_type == "code":
            m = CHECK.search(cell.source)
            if m:
                by_id[m.group("id")] = cell
    for ex in ids:
        cell = by_id.get(ex)
        if ex in missing or cell is None:
            results.append(ExerciseResult(ex, False, 0, 1, "the CHECK cell is missing from the student's notebook"))
        elif cell.get("execution_count") is None and not cell.get("outputs"):
            results.append(ExerciseResult(ex, False, 0, 1, "not run (" + (message or "the notebook stopped before it") + ")"))
        else:
            err = _error_of(cell)
            results.append(ExerciseResult(ex, err is None, int(err is None), 1, err or "passed"))
    score = sum(r.points for r in results)
    return GradeReport(student_path.name, score, len(results), status, round(seconds, 1), results, message)


def print_report(report: GradeReport) -> None:
    print(f"{report.notebook}: {report.score}/{report.max_score} ({report.status}, {report.seconds:.1f} s)")
    if report.message:
        print(f"  note: {report.message}")
    width = max((len(r.id) for r in report.exercises), default=8)
    for r in report.exercises:
        print(f"  {r.id:<{width}}  {'PASS' if r.passed else 'FAIL'}  {r.points}/{r.max_points}  {r.message[:160]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.assignments", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write student versions of every notebook")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    b.add_argument("--force", action="store_true", help="write into an existing directory")
    g = sub.add_parser("grade", help="grade one student notebook")
    g.add_argument("notebook", type=Path)
    g.add_argument("--report", type=Path)
    g.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    g.add_argument("--timeout", type=float, default=300.0, help="seconds per cell")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for path in build(args.out, args.source, args.force):
                print(path)
            return 0
        if not args.notebook.exists():
            raise ContractError(f"{args.notebook} does not exist")
        report = grade(args.notebook, args.source, args.timeout)
        print_report(report)
        if args.report:
            if args.report.resolve() == args.notebook.resolve():
                raise ContractError("--report would overwrite the student's notebook; choose another path")
            args.report.write_text(json.dumps(asdict(report), indent=2) + "\n")
        return 0
    except ContractError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

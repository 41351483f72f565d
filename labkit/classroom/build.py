"""Build what students get: labkit handouts (outputs cleared, solutions and hidden tests removed) or an
nbgrader source assignment. Above handout and nbgrader_export, so neither imports the other."""
from __future__ import annotations

from pathlib import Path

import nbformat

from labkit.classroom.handout import DEFAULT_SOURCE, exercise_ids, instructor_notebooks, make_student_notebook
from labkit.classroom.nbgrader_export import write_course
from labkit.contracts import ContractError


def build(out: Path, source: Path = DEFAULT_SOURCE, force: bool = False, fmt: str = "labkit",
          assignment: str = "paradigm-lab") -> list[Path]:
    """Write the student version of every notebook into `out`; returns the files written.

    fmt "labkit": handouts graded by `python -m labkit.assignments grade`. fmt "nbgrader": an nbgrader
    course folder out/source/<assignment>/ (see labkit.classroom.nbgrader_export). Refuses an existing
    `out` unless force=True (then only the files it writes are replaced)."""
    if fmt not in ("labkit", "nbgrader"):
        raise ContractError(f"--format must be 'labkit' or 'nbgrader', got {fmt!r}")
    out = Path(out)
    if out.exists() and not force:
        raise ContractError(f"{out} already exists; refusing to overwrite it. Fix: choose a new --out, or pass --force")
    paths = instructor_notebooks(source)
    if fmt == "nbgrader":
        return write_course(out, paths, assignment)
    out.mkdir(parents=True, exist_ok=True)
    written, lines = [], ["# Student notebooks", "", "| notebook | exercises |", "|---|---|"]
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        target = out / path.name
        nbformat.write(make_student_notebook(nb, path.name), target)
        written.append(target)
        lines.append(f"| {path.name} | {', '.join(exercise_ids(nb)) or '-'} |")
    lines += ["", "Fill in every `# YOUR CODE HERE`, run the notebook top to bottom, then grade it with",
              "`python -m labkit.assignments grade NN_topic.ipynb`."]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    written.append(out / "README.md")
    return written

"""Instructor notebook -> student handout.

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

The handout replaces each solution by `# YOUR CODE HERE` / `raise NotImplementedError()` at the same
indentation, removes hidden tests and clears EVERY output (an output of a solved notebook can state an
answer: notebook 13's bug cells print the grader's verdict, which names the fix). Each code cell gets
`metadata.labkit = {"kind": "solution" | "check" | "locked", "id": ...}` so the grader can restore
locked cells from the instructor's version, as nbgrader does with its checksums.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

from labkit.contracts import ContractError

SOLUTION = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION[ \t]*$\n(?:.*\n)*?[ \t]*### END SOLUTION[ \t]*(?:\n|$)", re.M)
HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[ \t]*$\n(?:.*\n)*?[ \t]*### END HIDDEN TESTS[ \t]*(?:\n|$)", re.M)
HIDDEN_MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) HIDDEN TESTS[ \t]*\n?", re.M)
CHECK = re.compile(r"^# CHECK: *(?P<id>[\w.-]+)\s*$", re.M)
DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "notebooks"


def student_source(source: str) -> str:
    """One cell's source with solutions replaced and hidden tests removed."""
    def blank(m: re.Match) -> str:
        indent = m.group("indent")
        return f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError()\n"

    return HIDDEN.sub("", SOLUTION.sub(blank, source))


def check_id(source: str) -> str | None:
    m = CHECK.search(source)
    return m.group("id") if m else None


def exercise_ids(nb) -> list[str]:
    """The CHECK ids of a notebook, in order."""
    return [m.group("id") for c in nb.cells if c.cell_type == "code" for m in CHECK.finditer(c.source)]


def cell_kinds(nb) -> list[tuple[str, str] | None]:
    """(kind, id) per cell of an instructor notebook: kind is solution / check / locked for code cells,
    None for markdown. Ids are stable: 'solution-<k>', '<check id>', 'locked-<k>' in cell order."""
    kinds, n_sol, n_locked = [], 0, 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            kinds.append(None)
        elif check_id(cell.source):
            kinds.append(("check", check_id(cell.source)))
        elif SOLUTION.search(cell.source):
            n_sol += 1
            kinds.append(("solution", f"solution-{n_sol}"))
        else:
            n_locked += 1
            kinds.append(("locked", f"locked-{n_locked}"))
    return kinds


def make_student_notebook(nb, source_name: str | None = None):
    """A student copy of an instructor notebook (nbformat node); the input is not changed.

    Every output is cleared; cells carry metadata.labkit {kind, id}; the notebook carries
    metadata.labkit.source (the instructor notebook's file name) so a renamed submission is matched."""
    student = copy.deepcopy(nb)
    for cell, kind in zip(student.cells, cell_kinds(nb)):
        if cell.cell_type == "code":
            cell.source = student_source(cell.source)
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
            cell.metadata["labkit"] = {"kind": kind[0], "id": kind[1]}
        elif cell.cell_type == "markdown":
            cell.pop("attachments", None) if not cell.get("attachments") else None
    student.metadata.pop("widgets", None)
    lab = dict(student.metadata.get("labkit", {}))
    lab.pop("claims", None)              # the ledger holds measured results; a handout starts empty
    if source_name:
        lab["source"] = source_name
    student.metadata["labkit"] = lab
    return student


def instructor_notebooks(source: Path) -> list[Path]:
    paths = sorted(p for p in Path(source).glob("[0-9][0-9]*_*.ipynb"))
    if not paths:
        raise ContractError(f"no notebooks NN_topic.ipynb in {source}; fix: pass --source pointing at the lab's notebooks/")
    return paths

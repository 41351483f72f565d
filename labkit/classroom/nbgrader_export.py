"""The lab's notebooks as an nbgrader source assignment (`build --format nbgrader`).

    OUT/nbgrader_config.py                       the course folder's config (CourseDirectory.root = OUT)
    OUT/source/<assignment>/NN_topic.ipynb       instructor notebooks with nbgrader cell metadata

The lab's exercise markers are nbgrader's own (`### BEGIN SOLUTION`, `### BEGIN HIDDEN TESTS`), so the
export only adds metadata.nbgrader to each cell: a solution cell is {solution: true}, a CHECK cell is
an autograded test {grade: true, locked: true, points: 1, grade_id: <check id>}, every other code
cell and every markdown cell is locked, each with a checksum (the md5 recipe nbgrader uses: source,
cell type, the three flags, grade id and points). The hidden-test block of each CHECK cell is the
lab's hardened check (labkit.classroom.inject, portable form): the kernel is reset, checkers come from
fresh copies of their modules, the learner's functions are wrapped (library functions and calls of
the reference refused, plain return values), so nbgrader's autograde gets the same protection.

Then, in OUT:  nbgrader generate_assignment <assignment>   -> release/<assignment>/ (student version)
               nbgrader autograde <assignment>             -> grades in gradebook.db
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path

from labkit.classroom import inject
from labkit.classroom.handout import CHECK, HIDDEN, SOLUTION, cell_kinds, check_id

SCHEMA_VERSION = 3


def checksum(cell) -> str:
    """md5 over what makes a cell what it is (as nbgrader computes it, so its validate/autograde agree)."""
    meta = cell.metadata["nbgrader"]
    grade, solution = bool(meta.get("grade")), bool(meta.get("solution"))
    locked = False if solution else True if grade else bool(meta.get("locked"))
    parts = [cell.source, cell.cell_type, str(grade), str(solution), str(locked), meta["grade_id"]]
    if grade:
        parts.append(str(float(meta["points"])))
    h = hashlib.md5()
    for part in parts:
        h.update(part.encode("utf-8"))
    return h.hexdigest()


def hardened_check_source(source: str, plan, analysis) -> str:
    """A CHECK cell whose hidden block is the hardened version of the whole check (visible part kept)."""
    visible = HIDDEN.sub("", source).rstrip("\n")
    body = inject.check_cell(plan, analysis, "nbgrader", portable=True).split("\n", 2)[2]
    return f"{visible}\n### BEGIN HIDDEN TESTS\n{body.rstrip()}\n### END HIDDEN TESTS\n"


def to_nbgrader(nb, points: int = 1):
    """An nbgrader source notebook (a copy) from an instructor notebook."""
    source = copy.deepcopy(nb)
    analysis = inject.analyse(nb)
    for k, (cell, kind) in enumerate(zip(source.cells, cell_kinds(nb))):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if kind is None:
            meta = {"grade": False, "solution": False, "locked": True, "grade_id": f"md-{k}"}
        elif kind[0] == "check":
            cell.source = hardened_check_source(cell.source, analysis.checks[kind[1]], analysis)
            meta = {"grade": True, "solution": False, "locked": True, "points": points, "grade_id": kind[1]}
        elif kind[0] == "solution":
            meta = {"grade": False, "solution": True, "locked": False, "grade_id": kind[1]}
        else:
            meta = {"grade": False, "solution": False, "locked": True, "grade_id": kind[1]}
        meta.update(schema_version=SCHEMA_VERSION, task=False)
        cell.metadata["nbgrader"] = meta
        cell.metadata["nbgrader"]["checksum"] = checksum(cell)
    source.metadata.pop("widgets", None)
    lab = dict(source.metadata.get("labkit", {}))
    lab.pop("claims", None)
    source.metadata["labkit"] = lab
    return source


def write_course(out: Path, notebooks: list[Path], assignment: str = "paradigm-lab") -> list[Path]:
    """An nbgrader course folder: nbgrader_config.py and source/<assignment>/*.ipynb. Returns the files."""
    import nbformat

    if not assignment.replace("-", "").replace("_", "").isalnum():
        from labkit.contracts import ContractError
        raise ContractError(f"assignment name {assignment!r}: use letters, digits, '-' and '_'")
    out = Path(out)
    folder = out / "source" / assignment
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        target = folder / path.name
        nbformat.write(to_nbgrader(nb), target)
        written.append(target)
    config = out / "nbgrader_config.py"
    config.write_text(
        "# written by python -m labkit.assignments build --format nbgrader\n"
        "c = get_config()  # noqa: F821\n"
        "c.CourseDirectory.root = __file__.rsplit('/', 1)[0]\n"
        "c.ClearSolutions.code_stub = {'python': '# YOUR CODE HERE\\nraise NotImplementedError()'}\n"
        "c.ExecutePreprocessor.timeout = 300\n")
    written.append(config)
    return written


__all__ = ["to_nbgrader", "write_course", "checksum", "CHECK", "SOLUTION", "check_id"]

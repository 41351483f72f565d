"""Grade one submission: a copy of it, run in a fresh temporary directory, judged by the kernel.

- Before any grading time is spent: the file must exist, parse as JSON and be an nbformat-4 notebook
  that matches an instructor notebook; otherwise the report says why (status invalid-json,
  not-a-notebook, unknown-notebook, missing) and nothing runs.
- The graded copy: a preamble cell first (baseline fingerprint, before any student code), the
  student's solution cells and added cells as written, locked cells restored from the instructor's
  handout (like nbgrader's checksummed cells), and before each CHECK cell a reset cell, then the
  instructor's check rewritten by labkit.classroom.inject.
- A check passes only when the kernel's execute_reply for its cell has status "ok", the cell printed
  the per-run marker, and the fingerprint of labkit's, torch's and the builtins' functions equals the
  baseline. Outputs are never read to decide a pass: a handler that hides tracebacks or a callback
  that clears outputs changes nothing.
- The kernel's working directory is a new temporary directory holding a copy of the submission and
  the data files; IPYTHONDIR, MPLCONFIGDIR and TMPDIR point inside it, the user site is off. Where
  Linux allows it (labkit.classroom.sandbox) the repository, the instructor's folder, the other
  submissions and the output folder are hidden from the kernel and the rest is read-only.
- Limits: one per cell and one for the whole notebook; a hang or a dead kernel is reported.
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labkit.classroom import inject, sandbox
from labkit.classroom.handout import CHECK, DEFAULT_SOURCE, check_id, make_student_notebook
from labkit.contracts import ContractError
from labkit.datafiles import DATA_DIR, sha256

REPO = Path(__file__).resolve().parents[2]
MAX_BYTES = 50 * 2**20
SUSPICIOUS = {
    "custom exception handler": r"set_custom_exc",
    "IPython event callback": r"events\s*\.\s*(register|callbacks)",
    "input/AST transformer": r"input_transformer|ast_transformers",
    "tracer or profiler": r"sys\s*\.\s*(settrace|setprofile)",
    "interpreter internals": r"sys\s*\.\s*modules|__builtins__|\bbuiltins\b|\bctypes\b|gc\s*\.\s*get_(objects|referrers)",
    "traceback display": r"showtraceback|showsyntaxerror|excepthook",
    "kernel internals": r"get_ipython\s*\(\s*\)\s*\.\s*(kernel|run_cell|displayhook|display_pub)",
    "file writes or deletes": r"open\([^)]*['\"][wa]b?\+?['\"]|write_text|write_bytes|os\s*\.\s*(remove|unlink|chmod|rename)|shutil\s*\.\s*(rmtree|move|copy)",
    "instructor files": r"notebooks/|\.ipynb|labkit\s*\.\s*__file__|__file__",
}


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
    status: str              # completed | timeout | crashed | invalid-json | not-a-notebook | unknown-notebook | missing | tampered
    seconds: float
    exercises: list = field(default_factory=list)
    message: str = ""
    student: str = ""
    sha256: str = ""
    graded_at: str = ""
    sandbox: str = ""
    flags: list = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def load_submission(path: Path):
    """(notebook, None) or (None, (status, message)) without executing anything."""
    import nbformat

    path = Path(path)
    if not path.is_file():
        return None, ("missing", f"{path} does not exist or is not a file")
    if path.stat().st_size > MAX_BYTES:
        return None, ("not-a-notebook", f"{path.name} is larger than {MAX_BYTES >> 20} MB; a notebook of this lab is far smaller")
    raw = path.read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, ("invalid-json", f"{path.name} is not valid JSON ({err}); a notebook saved by Jupyter is JSON. "
                                      "Fix: submit the .ipynb file itself, not a copy pasted from a browser or a .py export")
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list) or data.get("nbformat") != 4:
        return None, ("not-a-notebook", f"{path.name} is JSON but not a Jupyter notebook (nbformat 4 with a list of cells)")
    try:
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code" and not isinstance(cell.source, str):
                raise ValueError("a code cell without source text")
    except Exception as err:  # noqa: BLE001 - any parse failure is a report, not a crash
        return None, ("not-a-notebook", f"{path.name} is not a readable notebook: {err}")
    return nb, None


def reference_path(nb, path: Path, source: Path) -> Path | None:
    """The instructor notebook a submission answers: metadata.labkit.source (set by build), else its file name."""
    named = (nb.metadata.get("labkit") or {}).get("source")
    for name in (named, Path(path).name):
        if isinstance(name, str) and "/" not in name and (Path(source) / name).is_file():
            return Path(source) / name
    return None


def graded_notebook(student, reference, nonce: str):
    """The notebook that is executed, and where its preamble and checks sit.

    Returns (nb, check_cells {id: index}, preamble index, ids in order, analysis)."""
    import nbformat

    analysis = inject.analyse(reference)
    handout = make_student_notebook(reference)
    locked = {c.metadata["labkit"]["id"]: c.source for c in handout.cells
              if c.cell_type == "code" and c.metadata.get("labkit", {}).get("kind") == "locked"}
    ids = list(analysis.checks)
    cells = [nbformat.v4.new_code_cell(inject.preamble_cell(analysis, nonce))]
    where, seen = {}, set()
    for cell in student.cells:
        if cell.cell_type != "code":
            continue
        cell = copy.deepcopy(cell)
        cell.outputs, cell.execution_count = [], None
        meta = cell.metadata.get("labkit") or {}
        cid = check_id(cell.source) or (meta.get("id") if meta.get("kind") == "check" else None)
        if cid in analysis.checks and cid not in seen:
            seen.add(cid)
            cells.append(nbformat.v4.new_code_cell(inject.guard_cell()))
            cells.append(nbformat.v4.new_code_cell(inject.check_cell(analysis.checks[cid], analysis, nonce)))
            where[cid] = len(cells) - 1
            continue
        if cid is not None:            # a copy of a check cell, or an unknown id: never run the student's version
            continue
        if meta.get("kind") == "locked" and meta.get("id") in locked:
            cell.source = locked[meta["id"]]
        cells.append(cell)
    for cid in ids:                     # a deleted CHECK cell is still graded, at the end
        if cid not in where:
            cells.append(nbformat.v4.new_code_cell(inject.guard_cell()))
            cells.append(nbformat.v4.new_code_cell(inject.check_cell(analysis.checks[cid], analysis, nonce)))
            where[cid] = len(cells) - 1
    nb = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(reference.metadata))
    nb.metadata.pop("widgets", None)
    return nb, where, 0, ids, analysis


def flags_of(student) -> list[str]:
    """Code patterns an instructor may want to look at (reported, never scored)."""
    text = "\n".join(c.source for c in student.cells if c.cell_type == "code")
    return [name for name, rx in SUSPICIOUS.items() if re.search(rx, text)]


def feedback(ename: str, evalue: str) -> str:
    """A failed check's message, naming the misconception where the error allows it."""
    evalue = (evalue or "").strip()
    if ename == "NotImplementedError":
        return "not attempted: the exercise still raises NotImplementedError (fill in # YOUR CODE HERE)"
    if ename == "AssertionError":
        return evalue or "a hidden test failed (an assertion without a message): check the contract stated in the exercise"
    if ename == "NameError":
        return f"{evalue}: the check needs a name your notebook no longer defines (renamed, deleted, or its cell failed)"
    if ename == "ContractError":
        return f"a labkit contract refused your output: {evalue}"
    return f"your code raised {ename} on the grader's cases: {evalue}"


def _stream_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


def _sandbox_paths(workdir: Path, source: Path, hide_extra: list[Path]) -> tuple[list[Path], list[Path]]:
    """(read-only dirs, hidden paths) for the kernel's namespace."""
    home = Path.home()
    readonly = [p for p in {REPO, home, Path(source).resolve()} if p.exists()]
    keep = {REPO / "labkit", DATA_DIR}
    venv = Path(sys.prefix).resolve()
    hide = []
    for entry in sorted(REPO.iterdir()):
        if entry in keep or entry == venv or venv.is_relative_to(entry) or entry.name.endswith(".egg-info"):
            continue
        hide.append(entry)
    for p in [Path(source).resolve(), *hide_extra]:
        p = Path(p).resolve()
        if p.exists() and not workdir.is_relative_to(p) and not venv.is_relative_to(p) and not REPO.is_relative_to(p) \
                and p not in hide:
            hide.append(p)
    return readonly, hide


def _client_class():
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    class Client(NotebookClient):
        """Records the kernel's execute_reply (status, ename, evalue) of every cell."""

        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.replies = {}

        async def _check_raise_for_error(self, cell, cell_index, exec_reply):
            if exec_reply is not None:
                c = exec_reply["content"]
                self.replies[cell_index] = (c.get("status"), c.get("ename", ""), c.get("evalue", ""))
            return await super()._check_raise_for_error(cell, cell_index, exec_reply)

    class SandboxedKernelManager(AsyncKernelManager):
        readonly: list = []
        hide: list = []

        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            return sandbox.wrap(cmd, self.readonly, self.hide) if self.hide or self.readonly else cmd

    return Client, SandboxedKernelManager


def default_total(timeout: float) -> float:
    """The whole-notebook limit when none is given: 4 x the per-cell limit, at most 30 minutes."""
    return min(4 * timeout, 1800.0)


def grade(student_path: Path, source: Path = DEFAULT_SOURCE, timeout: float = 300.0, total_timeout: float | None = None,
          student: str = "", use_sandbox: str = "auto", hide: list[Path] | None = None, keep_workdir: bool = False) -> GradeReport:
    """Grade one submission (never raises for a broken, hanging, crashing or hostile notebook: that is reported).

    timeout: seconds per cell; total_timeout: seconds for the whole notebook (default 4 x timeout, at most 1800);
    use_sandbox: "auto" (namespace when available), "on" (refuse to grade without it), "off"."""
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    student_path = Path(student_path)
    start = time.perf_counter()
    report = GradeReport(student_path.name, 0, 0, "", 0.0, [], "", student, "", _now())
    nb, problem = load_submission(student_path)
    if problem:
        report.status, report.message = problem
        if student_path.is_file():
            report.sha256 = sha256(student_path)
        return report
    report.sha256 = sha256(student_path)
    ref_path = reference_path(nb, student_path, source)
    if ref_path is None:
        report.status = "unknown-notebook"
        report.message = (f"no instructor notebook matches {student_path.name} in {source}; fix: keep the handout's file "
                          "name (NN_topic.ipynb) or its metadata")
        return report
    import nbformat

    reference = nbformat.read(ref_path, as_version=4)
    report.notebook = ref_path.name
    report.flags = flags_of(nb)
    nonce = secrets.token_hex(8)
    graded, where, pre, ids, _ = graded_notebook(nb, reference, nonce)
    report.max_score = len(ids)
    if not ids:
        report.status, report.message = "no-exercises", "the instructor notebook has no CHECK cells"
        return report
    if use_sandbox == "off":
        boxed = False
    else:
        boxed = sandbox.available()
        if use_sandbox == "on" and not boxed:
            raise ContractError("--sandbox on: this machine does not allow unprivileged mount namespaces (unshare -rm); "
                                "fix: grade on Linux with user namespaces enabled, or pass --sandbox auto")
    report.sandbox = "namespace" if boxed else "none"
    workdir = Path(tempfile.mkdtemp(prefix="labkit-grade-"))
    total = total_timeout if total_timeout is not None else default_total(timeout)
    status, message = "completed", ""
    client = None
    try:
        shutil.copy2(student_path, workdir / ref_path.name)
        if DATA_DIR.is_dir():
            shutil.copytree(DATA_DIR, workdir / "data")
        for d in ("ipython", "mpl", "tmp"):
            (workdir / d).mkdir()
        env = dict(os.environ, IPYTHONDIR=str(workdir / "ipython"), MPLCONFIGDIR=str(workdir / "mpl"),
                   TMPDIR=str(workdir / "tmp"), PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg",
                   LABKIT_STUDENT_ID=student or "", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
        env.setdefault("OMP_NUM_THREADS", "1")
        env.pop("LABKIT_SEED", None)
        Client, Manager = _client_class()
        km_class = type("Manager", (Manager,), {})
        if boxed:
            km_class.readonly, km_class.hide = _sandbox_paths(workdir, source, list(hide or []) + [student_path.resolve().parent])
        client = Client(graded, timeout=int(timeout), kernel_name="python3", allow_errors=True, record_timing=False,
                        resources={"metadata": {"path": str(workdir)}}, kernel_manager_class=km_class,
                        startup_timeout=120)
        client.reset_execution_trackers()
        deadline = time.monotonic() + total
        with client.setup_kernel(env=env, cwd=str(workdir)):
            for index, cell in enumerate(graded.cells):
                remaining = deadline - time.monotonic()
                if remaining <= 1:
                    status, message = "timeout", f"the notebook ran longer than {total:.0f} s in total; later exercises were not graded"
                    break
                client.timeout = max(1, int(min(timeout, remaining)))
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError:
                    limit = "a cell" if client.timeout >= timeout else "the notebook"
                    status, message = "timeout", (f"{limit} ran longer than {client.timeout} s; later exercises were not graded")
                    break
    except DeadKernelError as err:
        status, message = "crashed", f"the kernel died: {err}"
    except Exception as err:  # noqa: BLE001 - any failure of the run is reported, not raised
        status, message = "crashed", f"{type(err).__name__}: {err}"
    finally:
        if not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    replies = client.replies if client is not None else {}
    marker = re.compile(rf"^LABKIT-GRADER {nonce} (\w+)$", re.M)
    base = marker.search(_stream_text(graded.cells[pre]))
    baseline = base.group(1) if base and replies.get(pre, ("",))[0] == "ok" else None
    if baseline is None and status == "completed":
        status = "crashed"
        err = replies.get(pre, ("", "", ""))
        message = f"the grader's preamble failed ({err[1]}: {err[2]}); is labkit installed in the kernel?"
    for cid in ids:
        index = where[cid]
        reply = replies.get(index)
        if reply is None:
            report.exercises.append(ExerciseResult(cid, False, 0, 1, "not run (" + (message or "the notebook stopped before it") + ")"))
            continue
        state, ename, evalue = reply
        found = marker.search(_stream_text(graded.cells[index]))
        if state != "ok":
            msg = feedback(ename, evalue)
        elif not found:
            msg = "the check did not run to its end: its code was altered before it ran (an input transformer?)"
        elif baseline is None or found.group(1) != baseline:
            msg = ("functions of labkit, torch or the builtins were replaced in the notebook, so the check cannot trust "
                   "them; remove the code that patches them")
        else:
            msg = "passed"
        ok = msg == "passed"
        report.exercises.append(ExerciseResult(cid, ok, int(ok), 1, msg))
    report.score = sum(e.points for e in report.exercises)
    report.status, report.message = status, message
    report.seconds = round(time.perf_counter() - start, 1)
    return report


def print_report(report: GradeReport) -> None:
    print(f"{report.student + ': ' if report.student else ''}{report.notebook}: {report.score}/{report.max_score} "
          f"({report.status}, {report.seconds:.1f} s, sandbox {report.sandbox or '-'})")
    if report.message:
        print(f"  note: {report.message}")
    if report.flags:
        print(f"  flags for review: {', '.join(report.flags)}")
    width = max((len(r.id) for r in report.exercises), default=8)
    for r in report.exercises:
        print(f"  {r.id:<{width}}  {'PASS' if r.passed else 'FAIL'}  {r.points}/{r.max_points}  {r.message[:160]}")


__all__ = ["CHECK", "ExerciseResult", "GradeReport", "grade", "load_submission", "print_report", "feedback"]

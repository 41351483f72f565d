"""Grade a whole class: a folder with one sub-folder or one .ipynb file per student.

    class/alice/13_smoke_tests_bug_hunt.ipynb      (a sub-folder: every .ipynb in it, matched by name or metadata)
    class/bob.ipynb                                (a file: the student id is the file name's stem)

Each submission is graded by its own `python -m labkit.assignments grade` process (at most `jobs` at
once) with a wall-clock limit; a process that hangs is killed with its kernel, a crash is a report
with a status, and the class goes on. Output folder: gradebook.csv (student, notebook, score, max,
status, one column of points per check) and reports/<student>.json (sha256 of each submission, time,
per-check feedback naming the misconception, flags for review).

The instructor's notebooks are read once, before the class starts; each submission is graded against
its own private copy of them (a fresh temporary folder, hidden from the kernel by the sandbox), so a
submission that rewrites the instructor's checks can only touch its own copy: that copy is compared
with the snapshot afterwards and the submission is reported as `tampered` with zero points. Nothing
is ever written back into the instructor's folder or the labkit package: they are read-only to the
kernel under the sandbox, and without it a change to labkit during a submission is flagged in its
report (the grader never restores files, so it cannot undo anyone's edits).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labkit.classroom.grade import GradeReport, _now, load_submission
from labkit.datafiles import sha256
from labkit.contracts import ContractError

LABKIT = Path(__file__).resolve().parents[1]


def submissions(folder: Path) -> list[tuple[str, Path]]:
    """(student id, notebook path) for every submission in `folder`, sorted by student."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ContractError(f"{folder} is not a folder; fix: pass a folder with one sub-folder or .ipynb file per student")
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            out += [(entry.name, p) for p in sorted(entry.glob("*.ipynb")) if not p.name.startswith(".")]
        elif entry.suffix == ".ipynb":
            out.append((entry.stem, entry))
    if not out:
        raise ContractError(f"no submissions in {folder}: expected <student>/<notebook>.ipynb or <student>.ipynb")
    return out


def snapshot(paths: list[Path], pattern: str = "*") -> dict[Path, bytes]:
    """Every file under the given folders matching `pattern`, by content (read only)."""
    files = {}
    for root in paths:
        for p in sorted(Path(root).rglob(pattern)):
            if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts:
                files[p] = p.read_bytes()
    return files


def changed(snap: dict[Path, bytes], roots: list[Path], pattern: str = "*") -> list[str]:
    """Files of the snapshot that differ now, vanished, or appeared under roots (nothing is written)."""
    now = snapshot(roots, pattern)
    out = [str(p) for p, data in snap.items() if now.get(p) != data]
    return out + [f"{p} (added)" for p in now if p not in snap]


def _private_source(notebooks: dict[str, bytes]) -> Path:
    """A fresh folder holding a copy of the instructor's notebooks for one submission."""
    d = Path(tempfile.mkdtemp(prefix="labkit-source-"))
    for name, data in notebooks.items():
        (d / name).write_bytes(data)
    return d


def _check_output_folder(out: Path) -> None:
    try:
        (out / "reports").mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, delete=True)
        probe.close()
    except OSError as err:
        raise ContractError(f"cannot write the gradebook to {out}: {err}; fix: choose a writable --out") from None


def _run_one(student: str, path: Path, source: Path, timeout: float, total: float, sandbox: str, out: Path,
             hide: list[Path]) -> subprocess.Popen:
    """One grading process; `source` is this submission's private copy of the instructor's notebooks."""
    report = out / "reports" / ".parts" / f"{student}__{path.stem}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "labkit.assignments", "grade", str(path), "--source", str(source), "--report", str(report),
           "--timeout", str(timeout), "--total-timeout", str(total), "--student", student, "--sandbox", sandbox, "--quiet"]
    for h in hide:
        cmd += ["--hide", str(h)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    proc.report_path, proc.started, proc.source = report, time.monotonic(), source
    return proc


def grade_class(folder: Path, out: Path, source: Path, jobs: int = 2, timeout: float = 300.0,
                total_timeout: float = 900.0, sandbox: str = "auto", progress: bool = True) -> list[GradeReport]:
    """Grade every submission of `folder` into `out` (gradebook.csv, reports/<student>.json)."""
    from tqdm.auto import tqdm

    folder, out, source = Path(folder).resolve(), Path(out).resolve(), Path(source).resolve()
    if out == folder or out.is_relative_to(folder):
        raise ContractError(f"--out {out} lies inside the submissions folder; fix: write the gradebook elsewhere")
    if folder.is_relative_to(source) or source.is_relative_to(folder):
        raise ContractError("the submissions folder and the instructor's --source overlap; fix: keep them apart")
    _check_output_folder(out)
    todo = submissions(folder)
    notebooks = {p.name: p.read_bytes() for p in sorted(source.glob("*.ipynb"))}
    if not notebooks:
        raise ContractError(f"no instructor notebooks in {source}; fix: pass --source pointing at the lab's notebooks/")
    hide = [folder, out, source]
    reports: list[GradeReport] = []
    running: list = []
    queue = list(todo)
    wall = total_timeout + 180.0                       # kernel start, preamble, cleanup
    bar = tqdm(total=len(todo), desc="grading", unit="notebook", disable=not progress)
    while queue or running:
        while queue and len(running) < max(1, jobs):
            student, path = queue.pop(0)
            nb, problem = load_submission(path)        # refused before any process or kernel starts
            if problem:
                reports.append(GradeReport(path.name, 0, 0, problem[0], 0.0, [], problem[1], student,
                                           sha256(path) if path.is_file() else "", _now()))
                bar.update(1)
                continue
            private = _private_source(notebooks)
            lib = snapshot([LABKIT], "*.py")
            proc = _run_one(student, path, private, timeout, total_timeout, sandbox, out, hide)
            proc.lib = lib
            running.append((student, path, proc))
        time.sleep(0.2)
        for item in list(running):
            student, path, proc = item
            late = time.monotonic() - proc.started > wall
            if proc.poll() is None and not late:
                continue
            if late:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            running.remove(item)
            rep = None
            if not late and proc.report_path.is_file():
                try:
                    rep = GradeReport(**json.loads(proc.report_path.read_text()))
                except (ValueError, TypeError):
                    rep = None
            if rep is None:
                why = (f"the grading process ran past {wall:.0f} s and was stopped" if late else
                       f"the grading process failed (exit {proc.returncode}): {(proc.stderr.read() or '')[-400:]}")
                rep = GradeReport(path.name, 0, 0, "timeout" if late else "crashed", round(time.monotonic() - proc.started, 1),
                                  [], why, student, sha256(path), _now())
            touched = [p for p in changed({proc.source / n: d for n, d in notebooks.items()}, [proc.source])]
            shutil.rmtree(proc.source, ignore_errors=True)
            if touched:
                rep.status, rep.score = "tampered", 0
                for e in rep.exercises:
                    e["points"], e["passed"] = 0, False
                rep.message = f"the submission changed its copy of the instructor's notebooks: {', '.join(touched[:5])}"
            moved = changed(proc.lib, [LABKIT], "*.py")
            if moved and rep.sandbox != "namespace":
                rep.flags = list(rep.flags) + [f"labkit changed while this was graded: {', '.join(moved[:3])}"]
            reports.append(rep)
            bar.update(1)
    bar.close()
    write_gradebook(reports, out)
    return reports


def write_gradebook(reports: list[GradeReport], out: Path) -> None:
    """gradebook.csv and reports/<student>.json (one file per student, all their notebooks)."""
    out = Path(out)
    ids = []
    for r in reports:
        for e in r.exercises:
            eid = e["id"] if isinstance(e, dict) else e.id
            if eid not in ids:
                ids.append(eid)
    rows = sorted(reports, key=lambda r: (r.student, r.notebook))
    with open(out / "gradebook.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "notebook", "score", "max", "status", *ids])
        for r in rows:
            pts = {(e["id"] if isinstance(e, dict) else e.id): (e["points"] if isinstance(e, dict) else e.points)
                   for e in r.exercises}
            w.writerow([r.student, r.notebook, r.score, r.max_score, r.status, *[pts.get(i, "") for i in ids]])
    by_student = {}
    for r in rows:
        by_student.setdefault(r.student, []).append(r.to_json() if hasattr(r, "to_json") else r)
    for student, notebooks in by_student.items():
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in student) or "_"
        (out / "reports" / f"{safe}.json").write_text(json.dumps({"student": student, "notebooks": notebooks}, indent=2) + "\n")
    parts = out / "reports" / ".parts"
    if parts.is_dir():
        for p in parts.iterdir():
            p.unlink()
        parts.rmdir()


def digest(paths: list[Path]) -> str:
    """One sha256 over the files (or the files under the folders) in paths: the instructor's folder is untouched."""
    h = hashlib.sha256()
    files = {Path(p): Path(p).read_bytes() for p in paths if Path(p).is_file()}
    files.update(snapshot([p for p in paths if Path(p).is_dir()]))
    for p, data in sorted(files.items()):
        h.update(str(p).encode() + b"\0" + data)
    return h.hexdigest()

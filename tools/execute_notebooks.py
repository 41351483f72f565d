"""Rebuild notebooks/NN_topic.ipynb from NN_topic.py and execute it top to bottom.

    python tools/execute_notebooks.py            # every notebook
    python tools/execute_notebooks.py 03 05      # those whose name starts with 03 or 05

The .py (jupytext percent) is the source; the .ipynb gets its inputs and fresh outputs. An .ipynb
whose inputs differ from its .py and that is newer than it (edited in JupyterLab without the
jupytext pairing) is left alone: sync it first (jupytext --sync), so no edit is lost.
Run under `make notebooks`, which sets the same environment as `make test` (one thread, no
progress bars), so the stored outputs are the ones nbval compares against.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from labkit.claims import read_ledger_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def inputs(nb) -> list:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def execute(py: Path) -> float:
    ipynb = py.with_suffix(".ipynb")
    nb = jupytext.read(py)
    if ipynb.exists():
        old = jupytext.read(ipynb)
        if inputs(old) != inputs(nb) and ipynb.stat().st_mtime > py.stat().st_mtime:
            raise SystemExit(f"{ipynb.name} has edits newer than {py.name}; run `jupytext --sync {ipynb}` first")
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.metadata.setdefault("jupytext", {})["formats"] = "ipynb,py:percent"
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        # every claim/check/compare the kernel makes is appended here (labkit.claims)
        os.environ["LABKIT_LEDGER"] = ledger = os.path.join(tmp, "ledger.jsonl")
        try:
            NotebookClient(nb, kernel_name="python3", timeout=600, startup_timeout=120, record_timing=False,
                           resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        finally:
            os.environ.pop("LABKIT_LEDGER", None)
        claims = read_ledger_file(ledger)
    seconds = time.perf_counter() - start
    # the ledger of the committed run lives with the notebook (the .py header does not carry it)
    nb.metadata["labkit"] = {"claims": claims}
    nb.metadata.pop("widgets", None)  # widget state differs on every run
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    jupytext.write(nb, ipynb)
    jupytext.write(nb, py, fmt="py:percent")  # keep the pair's header identical
    # drop the jupytext version from the header, so an upgrade does not rewrite every .py
    py.write_text("".join(line for line in py.read_text().splitlines(keepends=True) if "jupytext_version:" not in line))
    return seconds


def main(prefixes: list[str]) -> None:
    pys = sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.py"))
    if prefixes:
        pys = [p for p in pys if any(p.name.split('_')[0] == x or (len(x) > 3 and p.name.startswith(x)) for x in prefixes)]
    if not pys:
        raise SystemExit(f"no notebook matches {prefixes}")
    for py in pys:
        print(f"{py.name}: executing ...", flush=True)
        print(f"{py.name}: {execute(py):.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

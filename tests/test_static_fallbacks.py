"""Reading without a kernel: every committed notebook renders on GitHub, nbviewer, VS Code's preview
and in `make book` without a widget manager.

Scans each notebooks/*.ipynb output for
  * a widget view (application/vnd.jupyter.widget-view+json) with no text/html or image in the same
    output: a page without the widget manager would show the `VBox(...)` repr or nothing;
  * an unfinished progress bar: a tqdm line ("  0%|", "37%|") that does not reach 100% in that
    output, in a stream or as a widget's text (tqdm.notebook bars are widgets whose saved text is the
    bar as it started: `training:   0%|`).
"""
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
WIDGET = "application/vnd.jupyter.widget-view+json"
STATIC = ("text/html", "image/png", "image/svg+xml", "image/jpeg")
BAR = re.compile(r"(\d{1,3})%\|")


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else (value or "")


def offenders(nb: dict) -> list[str]:
    """One line per output that a static page would show badly: 'cell N: why: what it shows'."""
    out = []
    for n, cell in enumerate(nb.get("cells", [])):
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            text = _text(o.get("text")) + _text(data.get("text/plain"))
            if WIDGET in data and not any(k in data for k in STATIC):
                out.append(f"cell {n}: widget without a static fallback: {text.strip()[:70]!r}")
            bars = BAR.findall(text.replace("\r", "\n"))
            if bars and int(bars[-1]) != 100:
                out.append(f"cell {n}: unfinished progress bar ({bars[-1]}%): {text.strip()[:70]!r}")
    return out


def test_the_scan_finds_what_it_should():
    bad = {"cells": [{"outputs": [
        {"output_type": "display_data", "data": {"text/plain": "training:   0%|          | 0/160 [00:00<?, ?it/s]",
                                                 WIDGET: {"model_id": "x"}}},
        {"output_type": "execute_result", "data": {"text/plain": "VBox(children=(...))", WIDGET: {"model_id": "y"}}},
        {"output_type": "stream", "name": "stderr", "text": "fit: 40%|####  | 4/10\r"}]}]}
    good = {"cells": [{"outputs": [
        {"output_type": "display_data", "data": {"text/plain": "panel", "text/html": "<table></table>", WIDGET: {}}},
        {"output_type": "stream", "name": "stderr", "text": "fit: 40%|####  | 4/10\rfit: 100%|##########| 10/10\n"}]}]}
    assert len(offenders(bad)) == 4 and offenders(good) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_reads_without_a_kernel(path):
    found = offenders(json.loads(path.read_text(encoding="utf-8")))
    assert not found, f"{path.name}: {len(found)} output(s) a static page shows badly:\n  " + "\n  ".join(found[:20])

"""README's coverage table: one row per section of the chapter (and per row of its smoke-test table),
each pointing at ledger records that demonstrate it; at least one of them an asserted measurement
(a claim or a comparison), never only identities."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The chapter's section titles, in order, then the rows of its smoke-test table.
SECTIONS = [
    "Start from One Sentence", "A Training Paradigm Is a Data-Objective Pipeline", "From a Record to a Batch",
    "Continuous vs. Discrete Modeling", "Supervised Learning", "Supervision Is Often a Distribution",
    "Autoregressive Modeling", "Teacher Forcing and Exposure Bias", "Packing, Prompt Loss, and Completion Loss",
    "Denoising and Masked Modeling", "BERT-Style Corruption Is More Than [MASK]", "Contrastive Learning",
    "Negative Sampling Is the Task", "Distillation", "Adversarial Learning", "Preference and Policy Optimization",
    "Preference Data as Constructed Supervision", "On-Policy vs. Offline Training",
    "Curriculum and Multi-Stage Training", "Implementation: Dataset Is Part of the Objective",
    "Minimal Smoke Tests", "A Useful Map",
    "smoke test: AR LM", "smoke test: SFT", "smoke test: packed LM", "smoke test: masked LM",
    "smoke test: contrastive", "smoke test: distillation", "smoke test: preference", "smoke test: curriculum",
]


def ledger() -> dict[str, dict]:
    out = {}
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb")):
        for rec in json.loads(path.read_text())["metadata"].get("labkit", {}).get("claims", []):
            out[rec["id"]] = rec
    return out


def table_rows() -> list[tuple[str, str, list[str]]]:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- coverage:start -->(.*?)<!-- coverage:end -->", text, flags=re.S)
    assert m, "README.md has no coverage table between <!-- coverage:start --> and <!-- coverage:end -->"
    rows = []
    for line in m.group(1).strip().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("Chapter section", "") or set(cells[0]) <= set("-: "):
            continue
        rows.append((cells[0], cells[1], re.findall(r"`(\d\d[a-z]?\.[\w.\-]+)`", cells[2])))
    return rows


def test_one_row_per_section_in_order():
    assert [r[0] for r in table_rows()] == SECTIONS


def test_every_claim_id_is_real_and_rows_are_measured():
    records, problems = ledger(), []
    for section, notebooks, ids in table_rows():
        if not ids:
            problems.append(f"{section}: no claim ids")
            continue
        missing = [i for i in ids if i not in records]
        if missing:
            problems.append(f"{section}: ids not in any ledger: {missing}")
        kinds = {records[i]["kind"] for i in ids if i in records}
        if not kinds & {"claim", "comparison"}:
            problems.append(f"{section}: only checks ({ids}); point at a claim or comparison")
        named = set(re.findall(r"\d\d[a-z]?", notebooks))
        if {i.split(".")[0] for i in ids} - named:
            problems.append(f"{section}: notebook column {notebooks!r} does not name every notebook of {ids}")
    assert not problems, "\n".join(problems)

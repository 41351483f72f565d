"""labkit.claims (claim / check / compare and the ledger) and the ledger contract of every notebook."""
import json
import re
import sys
from pathlib import Path

import pytest

from labkit.checks import ContractError
from labkit.claims import check, claim, compare, ledger, read_ledger_file, reset, summary

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import ledger_check  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))


@pytest.fixture(autouse=True)
def _fresh_ledger(monkeypatch):
    monkeypatch.delenv("LABKIT_LEDGER", raising=False)
    monkeypatch.delenv("LABKIT_SEED", raising=False)
    reset()
    yield
    reset()


def test_claim_records_margin_and_prints_one_line(capsys):
    rec = claim("99.x", 0.74, above=0.5, text="accuracy", control="fixed", control_value=0.0)
    assert rec["margin"] == pytest.approx(0.24) and rec["kind"] == "claim" and rec["seeds"] == [0]
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("CLAIM 99.x: accuracy = 0.74 > 0.50")


def test_claim_fails_with_its_line():
    with pytest.raises(AssertionError, match="claim failed: CLAIM 99.y"):
        claim("99.y", 0.4, above=0.5)
    assert ledger() == []


@pytest.mark.parametrize("kwargs", [{}, {"above": 0.1, "between": (0, 1)}])
def test_claim_needs_one_threshold(kwargs):
    with pytest.raises(ContractError):
        claim("99.z", 0.3, **kwargs)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.3", None])
def test_claim_refuses_non_finite_or_non_numbers(bad):
    with pytest.raises(ContractError):
        claim("99.n", bad, above=0.1)


def test_above_and_below_is_an_interval():
    rec = claim("99.i", 0.3, above=0.1, below=0.4)
    assert rec["margin"] == pytest.approx(0.1) and rec["threshold"].startswith("in [")


def test_check_is_not_a_claim(capsys):
    rec = check("99.c", 1e-13, 0.0, 1e-12, text="max |grad diff|")
    assert rec["kind"] == "check" and capsys.readouterr().out.startswith("CHECK 99.c")
    with pytest.raises(AssertionError):
        check("99.c2", 1e-3, 0.0, 1e-6)


def test_compare_two_sided_verdicts():
    kw = dict(seeds=[0, 1, 2], arms=("A", "B"), metric="m", matched_on=["steps"])
    assert compare("99.b", [0.8, 0.82, 0.81], [0.5, 0.52, 0.49], expect="A better", **kw)["verdict"] == "A better"
    assert compare("99.w", [0.5, 0.52, 0.49], [0.8, 0.82, 0.81], expect="A worse", **kw)["verdict"] == "A worse"
    r = compare("99.s", [0.5, 0.6, 0.4], [0.52, 0.49, 0.5], expect="no detectable difference", **kw)
    assert r["ci"][0] < 0 < r["ci"][1] and r["margin"] > 0
    # lower is better flips the sign: a smaller loss is better
    r = compare("99.l", [1.0, 1.1, 1.05], [2.0, 2.1, 2.2], expect="A better", higher_is_better=False, **kw)
    assert r["value"] > 0


def test_compare_asserts_the_expected_verdict():
    with pytest.raises(AssertionError, match="comparison verdict 'A worse'"):
        compare("99.e", [0.1, 0.12, 0.11], [0.5, 0.52, 0.49], seeds=[0, 1, 2], arms=("A", "B"), metric="m",
                matched_on=["steps"], expect="A better")


def test_compare_contracts():
    kw = dict(arms=("A", "B"), metric="m", expect="A better")
    with pytest.raises(ContractError, match="matched"):
        compare("99.m", [1, 2], [0, 1], seeds=[0, 1], matched_on=[], **kw)
    with pytest.raises(ContractError, match="one value per seed"):
        compare("99.m", [1, 2], [0], seeds=[0, 1], matched_on=["x"], **kw)
    with pytest.raises(ContractError, match="one seed"):
        compare("99.m", [1], [0], seeds=[0], matched_on=["x"], **kw)
    r = compare("99.m", [1], [0], seeds=[0], matched_on=["x"], min_effect=0.5, **kw)
    assert r["verdict"] == "A better" and r["sd"] is None


def test_ledger_file_and_rerun_replaces(tmp_path, monkeypatch):
    path = tmp_path / "l.jsonl"
    monkeypatch.setenv("LABKIT_LEDGER", str(path))
    monkeypatch.setenv("LABKIT_SEED", "3")
    claim("99.r", 0.3, above=0.1)
    claim("99.r", 0.35, above=0.1)
    recs = read_ledger_file(path)
    assert [r["value"] for r in recs] == [0.35] and recs[0]["seeds"] == [3]
    assert len(ledger()) == 1 and "99.r" in summary()


# ---- the ledger contract of every committed notebook -------------------------------------------

KIND_WORD = {"claim": "CLAIM", "check": "CHECK", "comparison": "COMPARE"}


def _outputs(nb):
    text = []
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            text.append(o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", [])))
            data = o.get("data", {}).get("text/plain")
            if data:
                text.append(data if isinstance(data, str) else "".join(data))
    return "\n".join(text)


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_ledger_matches_its_outputs(ipynb):
    nb = json.loads(ipynb.read_text())
    recs = ledger_check.ledger(nb)
    assert recs, f"{ipynb.name} has no claims ledger in its metadata: re-execute it (`make notebooks NB={ipynb.name.split('_')[0]}`)"
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)), "claim ids must be unique"
    prefix = ipynb.name.split('_')[0] + "."
    assert all(i.startswith(prefix) for i in ids), f"claim ids of {ipynb.name} start with {prefix!r}"
    out = _outputs(nb)
    for r in recs:
        assert f"{KIND_WORD[r['kind']]} {r['id']}:" in out, f"{r['id']} is in the ledger but not in the outputs"
        if r["kind"] == "comparison":
            assert r["matched_on"] and r["control"], f"{r['id']}: a comparison names its control and what is matched"
    printed = set(re.findall(r"^(?:CLAIM|CHECK|COMPARE) (\S+):", out, re.M))
    assert printed <= set(ids), f"printed but not in the ledger: {sorted(printed - set(ids))}"
    assert any(r["kind"] != "check" for r in recs), "a notebook demonstrates at least one empirical claim"


THRESHOLD_ASSERT = re.compile(r"^\s*assert\b[^#\n]*(?:[<>]=?|==)\s*-?\d*\.?\d+\b")


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_thresholds_go_through_the_ledger(ipynb):
    """A numeric threshold asserted with a bare `assert` would be a claim outside the ledger."""
    nb = json.loads(ipynb.read_text())
    bad = [line.strip() for c in nb["cells"] if c["cell_type"] == "code"
           for line in "".join(c["source"]).splitlines() if THRESHOLD_ASSERT.match(line)
           and "BEGIN HIDDEN" not in line]
    hidden = []
    for c in nb["cells"]:   # hidden tests of exercises are graders, not claims
        src = "".join(c["source"])
        hidden += re.findall(r"### BEGIN HIDDEN TESTS(.*?)### END HIDDEN TESTS", src, re.S)
    bad = [b for b in bad if not any(b in h for h in hidden) and "# CHECK:" not in b]
    assert not bad, f"use labkit.claims.claim/check for: {bad}"


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=lambda p: p.name)
def test_prose_numbers_come_from_the_ledger(ipynb):
    miss = ledger_check.unbacked_in_notebook(ipynb)
    assert not miss, (f"{ipynb.name}: numbers in prose that no ledger record (or code literal) backs: {miss}; "
                      "state measured numbers through claim()/compare() or print them from code")


def test_readme_numbers_come_from_the_ledger():
    miss = ledger_check.unbacked_in_readme()
    assert not miss, f"README notebook map: numbers not in the notebook's ledger: {miss}"
    assert set(ledger_check.readme_rows((ROOT / "README.md").read_text())) == {p.stem for p in NOTEBOOKS}


def test_run_seeds_flags_thin_claims_and_thin_comparisons():
    """tools/run_seeds.py: a claim whose margin is within its spread is THIN; a multi-seed comparison whose
    smallest margin is within its margins' spread is a (reported) thin comparison; a safe one is neither."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("run_seeds", Path(__file__).resolve().parents[1] / "tools/run_seeds.py")
    run_seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_seeds)

    def rec(cid, kind, value, margin, seeds=(0, 1, 2)):
        return {"id": cid, "kind": kind, "value": value, "margin": margin, "seeds": list(seeds)}

    runs = {"nb": {s: [rec("c.safe", "claim", 1.0 + 0.01 * s, 0.5), rec("c.thin", "claim", 1.0 + 0.2 * s, 0.1),
                       rec("k.safe", "comparison", 0.3, 0.2 + 0.01 * s), rec("k.thin", "comparison", 0.3, 0.02 + 0.05 * s)]
                   for s in (0, 1, 2)}}
    lines, thin, thin_comparisons = run_seeds.margin_table(runs)
    assert thin == ["c.thin"] and thin_comparisons == ["k.thin"]
    assert any("k.thin" in line and "thin comparison" in line for line in lines)

"""Numbers in prose must come from the run: compare README and markdown numbers with the claims ledger.

    python tools/ledger_check.py [NN ...]     # list every prose number that no ledger entry backs

A number "needs backing" when it is written with a decimal point (0.74, 1.5×) or as a percentage
(17.5%, 100%). It is backed when it equals, at the precision it is written with, a number of the
notebook's ledger (`metadata.labkit.claims`: values, thresholds, margins, per-seed arms, means,
spreads, intervals; percentages also as fractions), or when it is a literal of the notebook's code
(a hyper-parameter such as lr 0.002 or ε = 0.1). Integers are counts and settings, not checked, and
neither is the level of an interval ("95% CI").
README's notebook map is checked row by row against the ledger of the row's notebook.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+|\d+)(\s?%)?(?![\w.]*\d)")
CODE_NUMBER = re.compile(r"(?<![\w.])(\d+\.\d+(?:e-?\d+)?|\d+e-?\d+|\d+)")


def ledger(nb: dict) -> list[dict]:
    return nb.get("metadata", {}).get("labkit", {}).get("claims", [])


def ledger_numbers(records: list[dict]) -> list[float]:
    """Every number a ledger states: values, thresholds, margins, arms, means, sd, interval ends."""
    out: list[float] = []
    for r in records:
        for key, v in r.items():
            if key in ("seeds",):
                continue
            if isinstance(v, bool):
                continue
            if isinstance(v, (int, float)):
                out.append(float(v))
            elif isinstance(v, list):
                out += [float(x) for x in v if isinstance(x, (int, float)) and not isinstance(x, bool)]
            elif isinstance(v, str) and key == "threshold":
                out += [float(x) for x in re.findall(r"-?\d+\.?\d*(?:e-?\d+)?", v)]
    # derived figures prose quotes: the arms' difference and ratio, and the gap to the control
    for r in records:
        if "mean_a" in r and "mean_b" in r:
            out.append(r["mean_a"] - r["mean_b"])
            if r["mean_b"]:
                out.append(r["mean_a"] / r["mean_b"])
            if r["mean_a"]:
                out.append(r["mean_b"] / r["mean_a"])
        if "control_value" in r and r.get("control_value") is not None:
            out.append(r["value"] - r["control_value"])
            if r["control_value"]:
                out.append(r["value"] / r["control_value"])
            if r["value"]:
                out.append(r["control_value"] / r["value"])
    return out


def code_literals(nb: dict) -> set[float]:
    src = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return {float(x) for x in CODE_NUMBER.findall(src)}


def prose_numbers(text: str) -> list[tuple[str, float, int, bool]]:
    """(token, value, decimals, is_percent) for each number that needs backing."""
    found = []
    for m in NUMBER.finditer(text):
        num, pct = m.group(1), bool(m.group(2))
        if pct and re.match(r"\s*(?:t-)?(?:CI|confidence|interval|two-sided)", text[m.end():m.end() + 20]):
            continue   # "a 95% interval" names a method, not a measurement
        if "." not in num and not pct:
            continue
        decimals = len(num.split(".")[1]) if "." in num else 0
        found.append((m.group(0).strip(), float(num), decimals, pct))
    return found


def backed(value: float, decimals: int, pct: bool, numbers: list[float], literals: set[float]) -> bool:
    tol = 0.5 * 10 ** -decimals + 1e-9
    candidates = [value] + ([value / 100] if pct else [])
    for c, t in zip(candidates, [tol, tol / 100]):
        if any(abs(abs(n) - c) <= t for n in numbers):
            return True
        if any(abs(n - c) <= 1e-12 for n in literals):
            return True
    return False


def markdown_text(nb: dict) -> str:
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return re.sub(r"\]\([^)]*\)", "]", text)   # link targets are not prose


def unbacked_in_notebook(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    nums, lits = ledger_numbers(ledger(nb)), code_literals(nb)
    return [tok for tok, v, d, p in prose_numbers(markdown_text(nb)) if not backed(v, d, p, nums, lits)]


def readme_rows(readme: str) -> dict[str, str]:
    """Notebook-map rows of README: notebook stem -> the row's text."""
    rows = {}
    for line in readme.splitlines():
        m = re.match(r"\|\s*(\d\d[a-z]?)\s*\|\s*\[`(\d\d[a-z]?_[\w]+)\.ipynb`\]", line)
        if m:
            rows[m.group(2)] = re.sub(r"\]\([^)]*\)", "]", line)
    return rows


def unbacked_in_readme(readme_path: Path = ROOT / "README.md") -> dict[str, list[str]]:
    out = {}
    for stem, row in readme_rows(readme_path.read_text()).items():
        nb_path = NOTEBOOKS / f"{stem}.ipynb"
        if not nb_path.exists():
            out[stem] = ["(no such notebook)"]
            continue
        nb = json.loads(nb_path.read_text())
        nums, lits = ledger_numbers(ledger(nb)), code_literals(nb)
        bad = [tok for tok, v, d, p in prose_numbers(row) if not backed(v, d, p, nums, lits)]
        if bad:
            out[stem] = bad
    return out


def main(prefixes: list[str]) -> int:
    bad = 0
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb")):
        if prefixes and not any(path.name.startswith(p) for p in prefixes):
            continue
        miss = unbacked_in_notebook(path)
        readme_miss = unbacked_in_readme().get(path.stem, [])
        print(f"{path.name}: {len(ledger(json.loads(path.read_text())))} ledger records; prose numbers "
              f"without backing: {miss or 'none'}; README row: {readme_miss or 'none'}")
        bad += len(miss) + len(readme_miss)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

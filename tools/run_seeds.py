"""Run every notebook under several LABKIT_SEED values; every claim cell must still hold.

    python tools/run_seeds.py [--seeds 1 2] [--jobs 2] [--fail-thin] [NN ...]

Each notebook is executed from its committed .ipynb inputs in a fresh kernel (nothing is written);
a failing assert is reported with the notebook, the seed and the cell's error. Each run's claim
ledger (labkit.claims, through LABKIT_LEDGER) is collected and joined with the committed run's
ledger (seed 0, in the notebook's metadata) into one table: per claim, its value under every seed,
the smallest margin and the seed-to-seed spread (max − min of the value). A claim whose smallest
margin is not larger than that spread is listed as THIN: another seed could break it.
Comparisons measured on one seed in the notebook get their two-sided verdict here, over all seeds;
a multi-seed comparison whose smallest margin is within its margins' spread is reported as a thin
comparison (its verdict held in every seed set; more seeds would make it safe).
Exit status 1 if any run failed (or, with --fail-thin, if any claim is thin).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from labkit.claims import read_ledger_file, t_quantile  # noqa: E402

RUNNER = r"""
import sys, nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
nb = nbformat.read(sys.argv[1], as_version=4)
try:
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
except CellExecutionError as err:
    print(str(err)[-3000:])
    sys.exit(1)
"""


def run_one(nb: Path, seed: int, tmp: str) -> tuple[Path, int, bool, float, str, list[dict]]:
    ledger = os.path.join(tmp, f"{nb.stem}.{seed}.jsonl")
    env = dict(os.environ, LABKIT_SEED=str(seed), OMP_NUM_THREADS="1", TQDM_DISABLE="1", HF_HUB_OFFLINE="1",
               LABKIT_LEDGER=ledger)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RUNNER, str(nb), str(nb.parent)], env=env, capture_output=True, text=True)
    return (nb, seed, out.returncode == 0, time.perf_counter() - start, out.stdout + out.stderr[-1500:],
            read_ledger_file(ledger))


def committed_ledger(nb: Path) -> list[dict]:
    return json.loads(nb.read_text()).get("metadata", {}).get("labkit", {}).get("claims", [])


def margin_table(runs: dict[str, dict[int, list[dict]]]) -> tuple[list[str], list[str], list[str]]:
    """runs: notebook -> seed -> records. Returns (table lines, ids of thin claims, ids of thin comparisons).

    A comparison run on several seeds per notebook run has a margin per seed set (how far its interval
    clears the verdict's boundary); it is a thin comparison when the smallest margin is not larger than
    the margins' own spread over seed sets (reported, not failing: its verdict held in every set)."""
    lines, thin, thin_comparisons = [], [], []
    head = f"{'claim':<44} {'kind':<10} {'values by seed':<34} {'min margin':>10} {'spread':>8}"
    lines.append(head)
    for name, by_seed in sorted(runs.items()):
        ids: dict[str, dict[int, dict]] = {}
        for seed, recs in sorted(by_seed.items()):
            for r in recs:
                ids.setdefault(r["id"], {})[seed] = r
        for cid, per_seed in ids.items():
            kind = next(iter(per_seed.values()))["kind"]
            values = [per_seed[s]["value"] for s in sorted(per_seed)]
            margins = [per_seed[s]["margin"] for s in sorted(per_seed)]
            spread = max(values) - min(values)
            shown = " ".join(f"{s}:{per_seed[s]['value']:.3g}" for s in sorted(per_seed))
            flag = ""
            if kind == "claim" and len(values) > 1 and min(margins) <= spread:
                flag = "  THIN"
                thin.append(cid)
            if kind == "comparison" and all(len(per_seed[s]["seeds"]) == 1 for s in per_seed) and len(values) > 1:
                flag = "  " + pooled_verdict(per_seed)
                if "disagrees" in flag:
                    thin.append(cid)
            elif kind == "comparison" and len(margins) > 1 and min(margins) <= max(margins) - min(margins):
                # the verdict held in every seed set, but its clearance varies by more than its smallest value
                flag = "  thin comparison (reported)"
                thin_comparisons.append(cid)
            lines.append(f"{cid:<44} {kind:<10} {shown:<34} {min(margins):>10.3g} {spread:>8.3g}{flag}")
    return lines, thin, thin_comparisons


def pooled_verdict(per_seed: dict[int, dict]) -> str:
    """Two-sided verdict over seeds for a comparison that each notebook run measured on one seed."""
    d = [per_seed[s]["value"] for s in sorted(per_seed)]
    m = next(iter(per_seed.values()))["min_effect"]
    expect = next(iter(per_seed.values()))["expect"]
    n, mean = len(d), sum(d) / len(d)
    sd = (sum((x - mean) ** 2 for x in d) / (n - 1)) ** 0.5
    half = t_quantile(n - 1) * sd / n ** 0.5
    verdict = "A better" if mean - half > m else "A worse" if mean + half < -m else "no detectable difference"
    ok = "agrees" if verdict == expect else "disagrees"
    return f"pooled {mean:+.3g} ± {half:.2g} -> {verdict} ({ok} with {expect!r})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fail-thin", action="store_true", help="exit 1 when a claim's margin is within its spread")
    parser.add_argument("prefixes", nargs="*")
    args = parser.parse_args()
    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
    if args.prefixes:
        nbs = [n for n in nbs if any(n.name.split('_')[0] == p or (len(p) > 3 and n.name.startswith(p)) for p in args.prefixes)]
    jobs = [(nb, s) for nb in nbs for s in args.seeds]
    failed = 0
    runs: dict[str, dict[int, list[dict]]] = {nb.stem: {0: committed_ledger(nb)} for nb in nbs}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        for nb, seed, ok, seconds, log, recs in pool.map(lambda j: run_one(*j, tmp), jobs):
            print(f"{'ok  ' if ok else 'FAIL'} {nb.name} LABKIT_SEED={seed} ({seconds:.0f} s)", flush=True)
            runs[nb.stem][seed] = recs
            if not ok:
                failed += 1
                print("     " + log.strip().replace("\n", "\n     "), flush=True)
    print(f"{len(jobs) - failed}/{len(jobs)} notebook runs held their claims")
    lines, thin, thin_comparisons = margin_table(runs)
    print("\nClaims over seeds (seed 0 = the committed run):")
    print("\n".join(lines))
    if thin_comparisons:
        print(f"\n{len(thin_comparisons)} thin comparison(s) (verdict held in every seed set; its margin varies by more "
              f"than its smallest value): {', '.join(thin_comparisons)}")
    if thin:
        print(f"\n{len(thin)} thin claim(s) (margin within the seed-to-seed spread): {', '.join(thin)}")
    else:
        print("\nno thin claim: every margin is larger than its seed-to-seed spread")
    return 1 if failed or (args.fail_thin and thin) else 0


if __name__ == "__main__":
    sys.exit(main())

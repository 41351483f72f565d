"""Run every notebook under several LABKIT_SEED values; every claim cell must still hold.

    python tools/run_seeds.py [--seeds 1 2] [--jobs 2] [NN ...]

Each notebook is executed from its committed .ipynb inputs in a fresh kernel (nothing is written);
a failing assert is reported with the notebook, the seed and the cell's error. Exit status 1 if any
run failed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

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


def run_one(nb: Path, seed: int) -> tuple[Path, int, bool, float, str]:
    env = dict(os.environ, LABKIT_SEED=str(seed), OMP_NUM_THREADS="1", TQDM_DISABLE="1", HF_HUB_OFFLINE="1")
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", RUNNER, str(nb), str(nb.parent)], env=env, capture_output=True, text=True)
    return nb, seed, out.returncode == 0, time.perf_counter() - start, out.stdout + out.stderr[-1500:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("prefixes", nargs="*")
    args = parser.parse_args()
    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.prefixes:
        nbs = [n for n in nbs if any(n.name.startswith(p) for p in args.prefixes)]
    jobs = [(nb, s) for nb in nbs for s in args.seeds]
    failed = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        for nb, seed, ok, seconds, log in pool.map(lambda j: run_one(*j), jobs):
            print(f"{'ok  ' if ok else 'FAIL'} {nb.name} LABKIT_SEED={seed} ({seconds:.0f} s)", flush=True)
            if not ok:
                failed += 1
                print("     " + log.strip().replace("\n", "\n     "), flush=True)
    print(f"{len(jobs) - failed}/{len(jobs)} notebook runs held their claims")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

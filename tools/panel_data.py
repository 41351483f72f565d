"""Compute the "what the model learns" runs of every panel state and write data/panels/<panel>.json.

    python tools/panel_data.py                   # every panel, seed LABKIT_SEED (default 0), CPU
    python tools/panel_data.py shift padding     # some panels
    python tools/panel_data.py --out /tmp/p      # somewhere else (the manifest is then left alone)

Each file is registered in data/MANIFEST.json (sha256, generator labkit.widgets.learned:write_panel_data)
when written to data/panels/ under the default seed, so `python -m labkit.data verify` checks it.
Runs are deterministic for a seed on one machine (CPU, OMP_NUM_THREADS=1); floats are rounded to 4 decimals.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from labkit.datafiles import DATA_DIR, GENERATOR_VERSION, MANIFEST, sha256  # noqa: E402
from labkit.widgets.learned import PANELS, write_panel_data  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("panels", nargs="*", default=sorted(PANELS), help=f"some of {sorted(PANELS)}")
    parser.add_argument("--out", type=Path, default=DATA_DIR / "panels")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    env_seed = os.environ.get("LABKIT_SEED", "").strip()
    seed = int(env_seed) if env_seed else 0
    register = args.out.resolve() == (DATA_DIR / "panels").resolve() and seed == 0
    manifest_path = DATA_DIR / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if register else {}
    total = time.perf_counter()
    for panel in args.panels:
        if panel not in PANELS:
            parser.error(f"unknown panel {panel!r}; one of {sorted(PANELS)}")
        start = time.perf_counter()
        path = args.out / f"{panel}.json"
        write_panel_data(path, panel, seed=seed)
        print(f"{panel:<12} {len(PANELS[panel]['states']):>3} states  {time.perf_counter() - start:6.1f} s  "
              f"{path.stat().st_size / 1024:5.1f} KiB  {path}")
        if register:
            manifest[f"panels/{panel}.json"] = {"generator": "labkit.widgets.learned:write_panel_data",
                                                "generator_version": GENERATOR_VERSION,
                                                "kwargs": {"panel": panel, "seed": 0}, "sha256": sha256(path)}
    if register:
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        print(f"registered in {manifest_path}")
    print(f"total {time.perf_counter() - total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""make bench: the lab's performance table, written to bench/ (results.md, results.csv, notebooks.png).

    python tools/bench.py [--repeats 3] [--notebook-repeats 1] [--skip-notebooks] [--only-notebooks [NN ...]]

Measures, on this machine:
- each notebook's execution time in a fresh kernel (budget 60 s each, 6 minutes for the lab) and its
  kernel's peak resident memory (budget 2 GiB each);
- chunked vs full-logits cross-entropy: peak memory and time (labkit.memory.ce_memory_benchmark);
- a TinyCausalLM training step vs a transformers GPT-2 of the same size, side by side in one run;
- labkit's collators vs transformers' (MLM masking, flattening/packing): examples per second.
Timings are medians over `repeats` runs (notebooks over `notebook-repeats`).
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_one_notebook(path: Path) -> dict:
    """Execute one notebook in a fresh kernel, in THIS process; return its seconds and the kernel's peak
    resident memory. The kernel is this process's child: once it has exited, getrusage(RUSAGE_CHILDREN)
    holds its maximum resident set size (Linux: KiB, macOS: bytes)."""
    import resource

    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_bytes = peak if sys.platform == "darwin" else peak * 1024
    return {"seconds": seconds, "peak_mib": peak_bytes / 2**20}


def _measure(path: Path) -> dict:
    """run_one_notebook in a child Python (so RUSAGE_CHILDREN sees this notebook's kernel alone)."""
    import json
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--one-notebook", str(path)], capture_output=True, text=True,
                         check=True, env=os.environ)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_notebooks(repeats: int) -> list[dict]:
    """Per notebook: median seconds over `repeats` fresh kernels, and the largest peak resident memory
    of its kernel (budgets: 60 s and 2 GiB each, 6 minutes for the lab)."""
    rows = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb")):
        runs = [_measure(path) for _ in range(repeats)]
        seconds = statistics.median(r["seconds"] for r in runs)
        peak = max(r["peak_mib"] for r in runs)
        rows.append({"group": "notebook", "item": path.stem, "value": round(seconds, 1), "unit": "s",
                     "note": "over budget (60 s)" if seconds > 60 else "within 60 s"})
        rows.append({"group": "notebook memory", "item": path.stem, "value": round(peak), "unit": "MiB peak RSS",
                     "note": "over budget (2 GiB)" if peak > 2048 else "within 2 GiB"})
        print(f"{path.stem}: {seconds:.1f} s, peak {peak:.0f} MiB", flush=True)
    total = sum(r["value"] for r in rows if r["group"] == "notebook")
    rows.append({"group": "notebook", "item": "whole lab (sum)", "value": round(total, 1), "unit": "s",
                 "note": "over budget (6 min)" if total > 360 else "within 6 min"})
    return rows


def bench_cross_entropy() -> list[dict]:
    from labkit.memory import ce_memory_benchmark

    rows = []
    for r in ce_memory_benchmark(device="cpu"):
        rows.append({"group": "cross-entropy", "item": f"V={r['V']} {r['path']}", "value": round(r["peak_bytes"] / 2**20, 1),
                     "unit": "MiB peak", "note": f"{r['seconds']:.2f} s"})
    return rows


def bench_training_step(repeats: int) -> list[dict]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from labkit.models import TinyCausalLM, count_parameters
    from labkit.paradigms.autoregressive import causal_lm_loss

    V, d, L, H, T, B = 512, 64, 2, 4, 32, 32
    torch.manual_seed(0)
    x = torch.randint(V, (B, T))
    ours = TinyCausalLM(V, d_model=d, n_layers=L, n_heads=H, max_len=T)
    theirs = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=T, n_embd=d, n_layer=L, n_head=H,
                                        bos_token_id=1, eos_token_id=2, pad_token_id=0))
    results = {}
    for name, model, loss_fn in [("labkit TinyCausalLM", ours, lambda: causal_lm_loss(ours(x), x)),
                                 ("transformers GPT-2", theirs, lambda: theirs(input_ids=x, labels=x).loss)]:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def step():
            loss = loss_fn()
            opt.zero_grad()
            loss.backward()
            opt.step()
        for _ in range(3):
            step()
        results[name] = (median_time(step, max(repeats, 5) * 4), count_parameters(model))
    ratio = results["labkit TinyCausalLM"][0] / results["transformers GPT-2"][0]
    rows = [{"group": "training step", "item": f"{k} ({p/1e3:.0f}k params)", "value": round(t * 1e3, 2), "unit": "ms",
             "note": f"B={B} T={T} d={d} L={L}"} for k, (t, p) in results.items()]
    rows.append({"group": "training step", "item": "ratio labkit / transformers", "value": round(ratio, 2), "unit": "x", "note": "same run"})
    return rows


def bench_collators(repeats: int) -> list[dict]:
    import torch
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithFlattening

    from labkit.batch import pack, pad
    from labkit.paradigms.masked import bert_mask
    from labkit.vocab import seed_vocab

    tok = seed_vocab()
    hf = tok.to_hf()
    g = torch.Generator().manual_seed(0)
    examples = [{"input_ids": torch.randint(8, 500, (int(n),), generator=g).tolist()}
                for n in torch.randint(8, 64, (256,), generator=g)]
    mlm = DataCollatorForLanguageModeling(hf, mlm=True, mlm_probability=0.15)
    flat = DataCollatorWithFlattening()

    def ours_mlm():
        ids, _ = pad([e["input_ids"] for e in examples], tok.pad_id)
        bert_mask(ids, tok.mask_id, len(tok), special_ids=tok.special_ids, generator=g)

    pairs = {"MLM masking": (ours_mlm, lambda: mlm(examples)),
             # like DataCollatorWithFlattening: one row, positions and boundary labels, no [T, T] mask
             "flattening / packing": (lambda: pack(examples, max_len=sum(len(e["input_ids"]) for e in examples),
                                                   block_diagonal=False),
                                      lambda: flat(examples))}
    rows = []
    for name, (ours, theirs) in pairs.items():
        t_ours, t_theirs = median_time(ours, repeats * 3), median_time(theirs, repeats * 3)
        rows.append({"group": "collator", "item": f"{name}: labkit", "value": round(len(examples) / t_ours), "unit": "examples/s", "note": ""})
        rows.append({"group": "collator", "item": f"{name}: transformers", "value": round(len(examples) / t_theirs), "unit": "examples/s", "note": ""})
        rows.append({"group": "collator", "item": f"{name}: ratio labkit / transformers (throughput)",
                     "value": round(t_theirs / t_ours, 2), "unit": "x", "note": "256 examples of 8-63 tokens"})
    return rows


def machine() -> str:
    import torch

    return (f"{platform.node() or 'machine'}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, torch {torch.__version__}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")


def write(rows: list[dict], out: Path, header: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["group", "item", "value", "unit", "note"])
        w.writeheader()
        w.writerows(rows)
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {header}.", "", "| group | item | value | unit | note |", "|---|---|---|---|---|"]
    lines += [f"| {r['group']} | {r['item']} | {r['value']} | {r['unit']} | {r['note']} |" for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    nbs = [r for r in rows if r["group"] == "notebook" and not r["item"].startswith("whole")]
    if nbs:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.barh([r["item"] for r in nbs], [r["value"] for r in nbs], color="#5b8bd0")
        ax.axvline(60, color="red", linestyle="--", label="budget 60 s")
        ax.set_xlabel("seconds (fresh kernel)")
        ax.invert_yaxis()
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "notebooks.png", dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--notebook-repeats", type=int, default=1)
    parser.add_argument("--skip-notebooks", action="store_true")
    parser.add_argument("--only-notebooks", nargs="*", default=None, metavar="NN",
                        help="time and measure notebooks only (those starting with NN; all if none given), print, write nothing")
    parser.add_argument("--one-notebook", type=Path, help=argparse.SUPPRESS)   # the child of _measure
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--readme", action="store_true", help="also put the table into README.md (between its bench markers)")
    args = parser.parse_args()
    if args.one_notebook:
        import json

        print(json.dumps(run_one_notebook(args.one_notebook)))
        return 0
    if args.only_notebooks is not None:
        for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb")):
            if not args.only_notebooks or any(path.name.split("_")[0] == x for x in args.only_notebooks):
                r = _measure(path)
                print(f"{path.stem}: {r['seconds']:.1f} s, peak {r['peak_mib']:.0f} MiB", flush=True)
        return 0
    rows = []
    if not args.skip_notebooks:
        rows += bench_notebooks(args.notebook_repeats)
    rows += bench_cross_entropy()
    rows += bench_training_step(args.repeats)
    rows += bench_collators(args.repeats)
    write(rows, args.out, machine())
    table = (args.out / "results.md").read_text()
    print(table)
    if args.readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        start, end = "<!-- bench:start -->", "<!-- bench:end -->"
        if start not in text or end not in text:
            raise SystemExit(f"README.md lacks the markers {start} / {end}")
        head, rest = text.split(start, 1)
        readme.write_text(f"{head}{start}\n{table}{end}{rest.split(end, 1)[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

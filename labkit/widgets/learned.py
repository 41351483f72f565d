"""What the model learns: for every state of seven panels, a real tiny-model run.

The contract panels (shift, padding, mask ratio, temperature, reduction) show what a choice does to
one example. This module trains a tiny model under each state, with the models, data and trainer the
notebooks use (labkit.models, MarkovWorld, labkit.train.fit), and reports the loss curve against
the known floor, the accuracy that matters and a few samples. Two fine-tuning panels, DPO (beta x
sum/mean, notebook 11) and scheduled sampling (shape x alpha_min, notebook 07), fine-tune the
notebook's own starting model in each state (labkit.widgets.learned_finetune) and add a per-x
series (answers by length; accuracy by answer position).

    run_state(panel, state, seed=None, device=None, callback=None) -> run dict (one state, live)
    write_panel_data(path, panel, seed=0)     every state of a panel -> JSON (make panel-data)
    stored_runs(panel)                        the shipped runs, data/panels/<panel>.json
    render_learned(panel, state, stored, live=None) -> {"html", "text"}
    LearnedView(panel)                        the widget: stored run + "train this state now"

A run dict: {"state", "seed", "steps", "curve": [[step, training loss]...], "floors": {name: nats},
"metrics": {name: value}, "samples": [str], "device"}, and for some panels "series": {"x", "xlabel",
"lines": {name: [share per x]}}. Stored runs are computed on the CPU under
a fixed seed (LABKIT_SEED when set), so `make panel-data` rewrites the same file on one machine
(floats are rounded to 4 decimals).
"""
from __future__ import annotations

import html as _html
import json
import os
import time
from functools import lru_cache
from pathlib import Path

import ipywidgets as W
import torch

from labkit.batch import collate
from labkit.contracts import IGNORE, ContractError
from labkit.data import MarkovWorld
from labkit.datafiles import DATA_DIR
from labkit.models import TinyCausalLM, TinyTransformer
from labkit.paradigms.autoregressive import (causal_lm_loss, causal_lm_token_losses, decode_agreement, generate,
                                             offset_accuracy)
from labkit.paradigms.corruption import delete_tokens_padded
from labkit.paradigms.masked import bert_mask, masked_lm_loss, random_mask, span_noise_mask
from labkit.reduce import REDUCTIONS, reduce
from labkit.train import fit
from labkit.vocab import seed_vocab
from labkit.widgets.learned_finetune import (DPO_BETAS, DPO_PROGRESS, DPO_STATES, SS_ALPHA_MINS, SS_PROGRESS, SS_STATES,
                                             run_dpo, run_scheduled_sampling)

__all__ = ["PANELS", "run_state", "write_panel_data", "stored_runs", "render_learned", "LearnedView", "state_key",
           "TEMPERATURES", "MASK_RATIOS", "DPO_BETAS", "SS_ALPHA_MINS"]

SHIFT_STATES = ("dataset", "loss", "both", "none")            # = widgets.panels.SHIFT_PLACES, in its order
PADDING_STATES = ("left/mask", "left/arange", "right/mask", "right/arange")
TEMPERATURES = tuple(round(10 ** (k / 4), 3) for k in range(-4, 5))        # 0.1 ... 10, the panel's slider stops
MASK_KINDS = ("token", "span", "bert", "deletion")                          # = widgets.panels.CORRUPTIONS
MASK_RATIOS = tuple(round(0.1 * k, 1) for k in range(1, 10))                # 0.1 ... 0.9, the panel's slider stops

STEPS, BATCH, BLOCK, N_VAL = 120, 32, 16, 256          # language-model panels: TinyCausalLM d=32, 2 layers
MLM_STEPS, MLM_BATCH, MLM_LEN = 120, 64, 16            # mask-ratio panel: bidirectional TinyTransformer d=32, 1 layer
CURVE_POINTS = 24


def _seed(seed: int | None) -> int:
    if seed is not None:
        return int(seed)
    env = os.environ.get("LABKIT_SEED", "").strip()
    return int(env) if env else 0


@lru_cache(maxsize=1)
def _world() -> MarkovWorld:
    return MarkovWorld(tokenizer=seed_vocab())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _curve(history) -> list:
    """About CURVE_POINTS (step, loss) pairs: means over equal chunks of the training losses."""
    n = len(history.loss)
    size = max(1, n // CURVE_POINTS)
    out = []
    for start in range(0, n, size):
        chunk = history.loss[start:start + size]
        out.append([history.steps[start + len(chunk) - 1] + 1, sum(chunk) / len(chunk)])
    return out


def _lm(seed: int) -> TinyCausalLM:
    torch.manual_seed(seed)
    return TinyCausalLM(len(_world().tokenizer), d_model=32, n_layers=2, n_heads=4, max_len=32)


def _samples(model, seed: int, n: int = 3, temperature: float = 1.0) -> list[str]:
    tok = _world().tokenizer
    prompt = tok.encode("<bos> the")
    new = generate(model, [prompt] * n, max_new_tokens=10, pad_id=tok.pad_id, temperature=temperature,
                   eos_id=tok.eos_id, generator=_gen(seed + 7))
    return [tok.decode(prompt + s) for s in new]


def _true_loss(ids: torch.Tensor, target: torch.Tensor) -> float:
    """The exact model's held-out loss: mean -log P[x_t, x_{t+1}] over the positions `target` [B,T]
    (causal_lm_token_losses' mask: True at t when logit t is scored against ids[t+1]): the loss of the
    true next-token distribution on these very tokens, the floor any model is measured against."""
    P = _world().P
    a, b = ids[:, :-1].cpu(), ids[:, 1:].cpu()
    t = target[:, :-1].cpu().bool()
    return float(-P[a[t], b[t]].clamp_min(1e-12).log().mean())


def _blocks(seed: int):
    w = _world()
    return (w.sample_windows(STEPS * BATCH, BLOCK + 1, _gen(seed)),
            w.sample_windows(N_VAL, BLOCK + 1, _gen(seed + 1000)))


# ----------------------------------------------------------------------------- the five panels

def _run_shift(state: str, seed: int, device, callback) -> dict:
    """Where the shift happens: dataset (labels = x[1:], plain loss), loss (labels = x, the loss
    shifts), both (the double shift), none (a copy task). Accuracy at offsets 0, 1, 2 on held-out blocks."""
    w = _world()
    external = state in ("dataset", "both")
    loss_shifts = state in ("loss", "both")
    train, val = _blocks(seed)

    def batch(s):
        x = train[s * BATCH:(s + 1) * BATCH]
        return x[:, :-1], (x[:, 1:] if external else x[:, :-1])

    model = _lm(seed)
    hist = fit(model, batch, lambda m, b: causal_lm_loss(m(b[0]), b[1], shift=loss_shifts), steps=STEPS, lr=3e-3,
               device=device, progress=False, callback=callback)
    x = val[:, :-1].to(hist.device)
    with torch.no_grad():
        logits = model(x)
    metrics = {"next-token accuracy": offset_accuracy(logits, x, 1), "best possible next-token accuracy": w.bayes_accuracy(1),
               "accuracy at t+2": offset_accuracy(logits, x, 2), "accuracy at t (copying the input)": offset_accuracy(logits, x, 0)}
    return {"floors": {"next-token entropy H1": w.entropy_rate(1), "two-ahead entropy H2": w.entropy_rate(2)},
            "metrics": metrics, "samples": _samples(model, seed), "history": hist}


def _run_temperature(state: str, seed: int, device, callback) -> dict:
    """Train with the loss at temperature T: cross-entropy of softmax(z / T), next-token targets."""
    w = _world()
    T = float(state)
    train, val = _blocks(seed)
    model = _lm(seed)
    hist = fit(model, lambda s: train[s * BATCH:(s + 1) * BATCH, :-1],
               lambda m, x: causal_lm_loss(m(x) / T, x, shift=True), steps=STEPS, lr=3e-3, device=device,
               progress=False, callback=callback)
    x = val[:, :-1].to(hist.device)
    with torch.no_grad():
        full = model(x).float()
    held = float(causal_lm_loss(full / T, x, shift=True))
    logits = full[:, :-1]

    def entropy(z):
        logp = z.log_softmax(-1)
        return float(-(logp.exp() * logp).sum(-1).mean())

    metrics = {"held-out loss at T (nats)": held, "next-token accuracy": offset_accuracy(full, x, 1),
               "entropy of softmax(z / T), used in training": entropy(logits / T),
               "entropy of softmax(z), T dropped at use": entropy(logits)}
    return {"floors": {"next-token entropy H1": w.entropy_rate(1)}, "metrics": metrics,
            "samples": _samples(model, seed, temperature=T), "history": hist}


def _sentences(seed: int, n: int):
    return _world().sample_sentences(n, _gen(seed), max_len=24)


def _run_padding(state: str, seed: int, device, callback) -> dict:
    """Train on sentences padded on `side` with `positions`; then decode held-out prompts in a
    left-padded batch (with the same positions policy) and alone."""
    side, positions = state.split("/")
    tok = _world().tokenizer
    sents = _sentences(seed, STEPS * BATCH + 200)
    train, held = sents[:STEPS * BATCH], sents[STEPS * BATCH:]
    model = _lm(seed)
    hist = fit(model, lambda s: collate([{"input_ids": x} for x in train[s * BATCH:(s + 1) * BATCH]], tok.pad_id,
                                        side=side, positions=positions),
               lambda m, b: causal_lm_loss(m(**b.model_inputs()), b.labels), steps=STEPS, lr=3e-3, device=device,
               progress=False, callback=callback)
    val = collate([{"input_ids": x} for x in held], tok.pad_id).to(hist.device)      # right padding: solo positions
    with torch.no_grad():
        losses, target = causal_lm_token_losses(model(**val.model_inputs()), val.labels)
    prompts = [s[:max(2, min(len(s) - 1, 2 + b % 5))] for b, s in enumerate(held[:48])]   # 2 to 6 tokens: real padding
    agree = decode_agreement(model, prompts, 6, tok.pad_id, positions=positions)
    samples = [f"{tok.decode(prompts[b])} | alone: {tok.decode(agree['alone'][b])} | batched: {tok.decode(agree['batched'][b])}"
               for b in (agree["mismatch"][:2] or [0, 1])]
    metrics = {"held-out loss, each sentence at its own positions (nats)": float(losses[target].mean()),
               "batched greedy decoding = decoding alone (share of prompts)": 1 - agree["mismatch_rate"]}
    return {"floors": {"exact model on these sentences": _true_loss(val.input_ids, target)},
            "metrics": metrics, "samples": samples, "history": hist}


def _run_reduction(state: str, seed: int, device, callback) -> dict:
    """Train on whole sentences with the per-token losses reduced by `state`; held-out loss per
    token on all sentences (floor: the exact model), on short ones (at most 8 targets) and long ones
    (at least 14), each next to the exact model's loss on the same tokens."""
    tok = _world().tokenizer
    sents = _sentences(seed, STEPS * BATCH + 300)
    train, held = sents[:STEPS * BATCH], sents[STEPS * BATCH:]

    def loss(m, b):
        losses, mask = causal_lm_token_losses(m(**b.model_inputs()), b.labels)
        return reduce(losses, mask, state).value

    model = _lm(seed)
    hist = fit(model, lambda s: collate([{"input_ids": x} for x in train[s * BATCH:(s + 1) * BATCH]], tok.pad_id),
               loss, steps=STEPS, lr=3e-3, device=device, progress=False, callback=callback)
    metrics, floors = {}, {}
    for name, rows in (("all sentences", held), ("short sentences (<= 8 targets)", [s for s in held if len(s) - 1 <= 8]),
                       ("long sentences (>= 14 targets)", [s for s in held if len(s) - 1 >= 14])):
        val = collate([{"input_ids": x} for x in rows], tok.pad_id).to(hist.device)
        with torch.no_grad():
            losses, target = causal_lm_token_losses(model(**val.model_inputs()), val.labels)
        exact = _true_loss(val.input_ids, target)
        metrics[f"held-out loss per token, {name}"] = float(losses[target].mean())
        if name == "all sentences":
            floors["exact model, all held-out sentences"] = exact
        else:      # a subset chosen by length is not a floor (the choice depends on the tokens): a reference
            metrics[f"minus the exact model's loss on the same tokens, {name}"] = float(losses[target].mean()) - exact
    return {"floors": floors, "metrics": metrics, "samples": _samples(model, seed), "history": hist}


def _corrupt(kind: str, rows: torch.Tensor, ratio: float, g: torch.Generator):
    """rows [B, L] -> (inputs, labels) for an encoder that predicts clean tokens in place.
    token: each token -> <mask> with prob ratio; bert: 80/10/10 of the chosen; span: T5's noise mask
    (mean span 3), every noise token shown as <mask> (encoder-only: no sentinels); deletion: tokens
    dropped, the rest shifted left and padded, every position's clean token is a target."""
    tok = _world().tokenizer
    special = tok.special_ids
    if kind == "token":
        return random_mask(rows, ratio, tok.mask_id, special_ids=special, generator=g)
    if kind == "bert":
        return bert_mask(rows, tok.mask_id, len(tok), p=ratio, special_ids=special, generator=g)
    if kind == "span":
        noise = torch.stack([span_noise_mask(rows.shape[1], ratio, 3.0, g) for _ in range(len(rows))])
        noise &= ~torch.isin(rows, torch.tensor(special))
        return (torch.where(noise, torch.full_like(rows, tok.mask_id), rows),
                torch.where(noise, rows, torch.full_like(rows, IGNORE)))
    return delete_tokens_padded(rows, ratio, tok.pad_id, special, g)[0], rows.clone()


def _run_mask_ratio(state: str, seed: int, device, callback) -> dict:
    """A bidirectional masked LM trained with one corruption at one ratio; held-out accuracy at the
    targets next to the exact posterior's (forward-backward over the known chain)."""
    kind, ratio = state.split("/")
    ratio = float(ratio)
    w, tok = _world(), _world().tokenizer
    rows = w.sample_windows(MLM_STEPS * MLM_BATCH, MLM_LEN, _gen(seed + 20))
    clean = w.sample_windows(N_VAL, MLM_LEN, _gen(seed + 1))
    val_in, val_y = _corrupt(kind, clean, ratio, _gen(seed + 2))
    torch.manual_seed(seed)
    model = TinyTransformer(len(tok), d_model=32, n_layers=1, n_heads=4, max_len=MLM_LEN, causal=False)

    def batches(s):
        return _corrupt(kind, rows[s * MLM_BATCH:(s + 1) * MLM_BATCH], ratio, _gen(seed * 100_000 + s))

    hist = fit(model, batches, lambda m, b: masked_lm_loss(m, *b), steps=MLM_STEPS, lr=3e-3, device=device,
               progress=False, callback=callback)
    target = val_y.ne(IGNORE)
    with torch.no_grad():
        logits = model(val_in.to(hist.device)).float().cpu()
    logp = logits.log_softmax(-1)
    pred = logits.argmax(-1)
    metrics = {"accuracy at the targets": float(pred[target].eq(clean[target]).float().mean()),
               "held-out loss at the targets (nats)": float(-logp[target].gather(-1, clean[target][:, None]).mean()),
               "targets per row": float(target.sum(1).float().mean())}
    floors = {}
    if kind != "deletion":        # the exact conditional given what the corruption left untouched
        post = w.posterior(clean, ~target)[target]
        metrics["best possible accuracy at the targets"] = float(post.argmax(-1).eq(clean[target]).double().mean())
        label = "exact posterior" if kind != "bert" else "exact posterior, chosen tokens hidden (approx.)"
        floors[label] = float(-post.gather(-1, clean[target][:, None]).clamp_min(1e-12).log().mean())
    samples = []
    for b in range(2):
        shown = [tok.token(int(i)) for i in val_in[b]]
        fill = [tok.token(int(pred[b, t])) if bool(target[b, t]) else "·" for t in range(MLM_LEN)]
        samples.append(f"input: {' '.join(shown)} | model at targets: {' '.join(fill)} | clean: {tok.decode(clean[b])}")
    return {"floors": floors, "metrics": metrics, "samples": samples, "history": hist}


# states, run function, notebook, what is trained; "progress": the callback steps of one live run (its bar);
# "line": how the dashed lines of the loss plot are named (a floor, or a reference value)
PANELS = {
    "shift": {"states": SHIFT_STATES, "run": _run_shift, "notebook": "03", "what": "TinyCausalLM on MarkovWorld blocks",
              "progress": STEPS},
    "padding": {"states": PADDING_STATES, "run": _run_padding, "notebook": "04", "what": "TinyCausalLM on MarkovWorld sentences",
                "progress": STEPS},
    "mask_ratio": {"states": tuple(f"{k}/{r:.1f}" for k in MASK_KINDS for r in MASK_RATIOS), "run": _run_mask_ratio,
                   "notebook": "08", "what": "bidirectional TinyTransformer on MarkovWorld windows", "progress": MLM_STEPS},
    "temperature": {"states": tuple(f"{T:g}" for T in TEMPERATURES), "run": _run_temperature, "notebook": "01",
                    "what": "TinyCausalLM on MarkovWorld blocks, loss = CE(softmax(z / T))", "progress": STEPS},
    "reduction": {"states": tuple(REDUCTIONS), "run": _run_reduction, "notebook": "06",
                  "what": "TinyCausalLM on MarkovWorld sentences", "progress": STEPS},
    "dpo": {"states": DPO_STATES, "run": run_dpo, "notebook": "11", "progress": DPO_PROGRESS, "line": "reference line",
            "what": "DPO from notebook 11's SFT reference (TinyCausalLM) on its 600 training pairs, 80 steps"},
    "scheduled_sampling": {"states": SS_STATES, "run": run_scheduled_sampling, "notebook": "07", "progress": SS_PROGRESS,
                           "what": "notebook 07's teacher-forced checkpoint fine-tuned 60 steps on RunningSumTask"},
}


def _panel(panel: str) -> dict:
    if panel not in PANELS:
        raise ContractError(f"unknown panel {panel!r}; fix: one of {list(PANELS)}")
    return PANELS[panel]


def state_key(panel: str, **values) -> str:
    """The stored-run key of a panel state: shift(where), padding(side, positions), mask_ratio(kind, ratio),
    temperature(T), reduction(reduction), dpo(beta, reduction), scheduled_sampling(shape, alpha_min; alpha_min 1
    is "teacher_forcing" whatever the shape). Values between the slider stops map to no stored run (None)."""
    if panel == "shift":
        return values["where"]
    if panel == "padding":
        return f"{values['side']}/{values['positions']}"
    if panel == "mask_ratio":
        return f"{values['kind']}/{float(values['ratio']):.1f}" if any(abs(float(values["ratio"]) - r) < 1e-6 for r in MASK_RATIOS) else None
    if panel == "temperature":
        T = float(values["T"])
        hit = [t for t in TEMPERATURES if abs(t - T) <= 0.002 * t]
        return f"{hit[0]:g}" if hit else None
    if panel == "reduction":
        return values["reduction"]
    if panel == "dpo":
        beta = float(values["beta"])
        hit = [b for b in DPO_BETAS if abs(b - beta) <= 1e-6 * b]
        return f"{hit[0]:g}/{values['reduction']}" if hit else None
    if panel == "scheduled_sampling":
        a = float(values["alpha_min"])
        if abs(a - 1.0) < 1e-6:
            return "teacher_forcing"
        hit = [m for m in SS_ALPHA_MINS if abs(m - a) < 1e-6]
        return f"{values['shape']}/{hit[0]:.2f}" if hit else None
    _panel(panel)


def _r(x):
    return round(float(x), 4) if isinstance(x, float) else x


def run_state(panel: str, state: str, seed: int | None = None, device=None, callback=None) -> dict:
    """Train one state of a panel (seconds on a CPU); returns the run dict (module doc) plus
    "seconds". device: default labkit.device(); callback(step, model, loss) as in fit (a progress bar)."""
    spec = _panel(panel)
    if state not in spec["states"]:
        raise ContractError(f"{panel} has no state {state!r}; fix: one of {list(spec['states'])}")
    seed = _seed(seed)
    start = time.perf_counter()
    out = spec["run"](state, seed, device, callback)
    hist = out.pop("history")
    run = {"state": state, "seed": seed, "steps": len(hist.loss), "curve": [[s, _r(v)] for s, v in _curve(hist)],
           "floors": {k: _r(v) for k, v in out["floors"].items()}, "metrics": {k: _r(v) for k, v in out["metrics"].items()},
           "samples": out["samples"], "device": hist.device, "seconds": time.perf_counter() - start}
    if "series" in out:
        run["series"] = {**out["series"], "lines": {k: [_r(float(v)) for v in vs] for k, vs in out["series"]["lines"].items()}}
    return run


def panel_data(panel: str, seed: int | None = None, states=None, device="cpu") -> dict:
    """Every state of a panel (or `states`), trained on `device` under `seed`: the JSON written to data/panels/."""
    spec = _panel(panel)
    seed = _seed(seed)
    runs = {}
    for state in states or spec["states"]:
        run = run_state(panel, state, seed=seed, device=device)
        run.pop("seconds")
        runs[state] = run
    return {"panel": panel, "notebook": spec["notebook"], "model": spec["what"], "seed": seed,
            "torch": torch.__version__.split("+")[0], "runs": runs}


def write_panel_data(path, panel: str, seed: int = 0) -> None:
    """Generator of data/panels/<panel>.json (labkit.datafiles.GENERATORS)."""
    data = panel_data(panel, seed=seed)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")


@lru_cache(maxsize=None)
def stored_runs(panel: str) -> dict | None:
    """data/panels/<panel>.json as a dict, or None when the file is not there."""
    _panel(panel)
    path = DATA_DIR / "panels" / f"{panel}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- rendering

RUN_COLORS = {"stored": "#5c85d6", "live": "#e67e22"}


def _svg(curves: dict, floors: dict, width: int = 320, height: int = 150) -> str:
    """Loss curves {name: [[step, loss]...]} and dashed floor lines {label: nats} as an inline SVG."""
    ys = [v for c in curves.values() for _, v in c] + list(floors.values())
    xs = [s for c in curves.values() for s, _ in c]
    lo, hi = min(0.0, min(ys)), max(ys) * 1.05
    x1 = max(xs) if xs else 1
    pad, top = 28, 6
    sx = lambda x: pad + (width - pad - 6) * x / x1  # noqa: E731
    sy = lambda y: top + (height - top - 16) * (hi - y) / ((hi - lo) or 1.0)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" style="background:#fff">',
             f'<text x="2" y="{sy(hi) + 8:.0f}" font-size="9" font-family="sans-serif">{hi:.2f}</text>',
             f'<text x="2" y="{sy(lo):.0f}" font-size="9" font-family="sans-serif">{lo:.2f}</text>',
             f'<text x="{width - 60}" y="{height - 3}" font-size="9" font-family="sans-serif">step {x1}</text>']
    for k, (label, v) in enumerate(floors.items()):
        y = sy(v)
        parts.append(f'<line x1="{pad}" x2="{width - 6}" y1="{y:.1f}" y2="{y:.1f}" stroke="#444" stroke-dasharray="{4 + 2 * k},3" '
                     f'stroke-width="0.9"><title>{_html.escape(label)} {v:.3f}</title></line>')
    for name, c in curves.items():
        pts = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in c)
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{RUN_COLORS.get(name, "#888")}" stroke-width="1.6"/>')
    parts.append("</svg>")
    return "".join(parts)


SERIES_COLORS = ("#5c85d6", "#2e9d4a", "#999999")


def _series_svg(series: dict, live: dict | None = None, width: int = 300, height: int = 150) -> str:
    """A run's series {"x", "xlabel", "lines": {name: [share per x]}} as an inline SVG, y in [0, 1]; the
    first line of a live run is drawn over it in orange, dashed."""
    xs = series["x"]
    x0, x1 = min(xs), max(xs)
    pad, top = 28, 6
    sx = lambda x: pad + (width - pad - 6) * (x - x0) / ((x1 - x0) or 1)  # noqa: E731
    sy = lambda y: top + (height - top - 16) * (1.0 - y)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" style="background:#fff">',
             f'<text x="2" y="{sy(1) + 8:.0f}" font-size="9" font-family="sans-serif">1</text>',
             f'<text x="2" y="{sy(0):.0f}" font-size="9" font-family="sans-serif">0</text>',
             f'<text x="{pad}" y="{height - 3}" font-size="9" font-family="sans-serif">{_html.escape(series["xlabel"])} '
             f'{x0} ... {x1}</text>']
    lines = [(name, vs, SERIES_COLORS[k % len(SERIES_COLORS)], "") for k, (name, vs) in enumerate(series["lines"].items())]
    if live is not None:
        name, vs = next(iter(live["lines"].items()))
        lines.append((f"{name} (trained now)", vs, RUN_COLORS["live"], ' stroke-dasharray="4,2"'))
    for name, vs, color, dash in lines:
        pts = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v in zip(xs, vs))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.5"{dash}>'
                     f'<title>{_html.escape(name)}</title></polyline>')
    parts.append("</svg>")
    legend = ", ".join(f"<span style='color:{c}'>{_html.escape(n)}</span>" for n, _, c, _ in lines)
    return f"<div>{''.join(parts)}<div style='font-size:10px;color:#555;max-width:{width}px'>{legend}</div></div>"


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _run_html(run: dict, title: str, color: str, line: str = "floor") -> str:
    cell = "padding:1px 6px;border:1px solid #ddd;font-size:12px"
    rows = "".join(f"<tr><td style='{cell}'>{_html.escape(k)}</td><td style='{cell};text-align:right'>{_fmt(v)}</td></tr>"
                   for k, v in sorted(run["metrics"].items()) + [(f"{line}: {k}", v) for k, v in run["floors"].items()])
    samples = "".join(f"<li><code>{_html.escape(s)}</code></li>" for s in run["samples"])
    return (f"<div style='min-width:300px'><b style='color:{color}'>{_html.escape(title)}</b>"
            f"<table style='border-collapse:collapse'>{rows}</table>"
            f"<p style='margin:2px 0;font-size:12px'>samples:</p><ul style='margin:0;font-size:11px'>{samples}</ul></div>")


def render_learned(panel: str, state: str | None, stored: dict | None = None, live: dict | None = None) -> dict:
    """The "what the model learns" view of one state: the stored run (and a live one) side by side,
    the loss curves against the known floors (dashed). stored: stored_runs(panel) (default: loaded)."""
    spec = _panel(panel)
    line = spec.get("line", "floor")
    stored = stored_runs(panel) if stored is None else stored
    run = (stored or {}).get("runs", {}).get(state) if state is not None else None
    head = f"<p style='margin:4px 0'><b>What the model learns</b> ({_html.escape(spec['what'])}), state <code>{_html.escape(str(state))}</code></p>"
    if run is None:
        why = ("no stored runs (data/panels/{}.json missing; `make panel-data`)".format(panel) if stored is None
               else "this state lies between the stored settings")
        text = f"{panel} {state}: {why}; press 'train this state now'" if state is not None else f"{panel}: {why}"
        body = f"<p>{_html.escape(text)}</p>"
        if live is not None:
            body += _run_html(live, f"trained now ({live['steps']} steps, {live['seconds']:.1f} s on {live['device']})",
                              RUN_COLORS["live"], line)
            if "series" in live:
                body += _series_svg(live["series"])
        return {"html": head + body, "text": text}
    curves = {"stored": run["curve"]}
    if live is not None:
        curves["live"] = live["curve"]
    cols = _run_html(run, f"stored run (seed {run['seed']}, {run['steps']} steps, {run['device']})", RUN_COLORS["stored"], line)
    if live is not None:
        cols += _run_html(live, f"trained now ({live['steps']} steps, {live['seconds']:.1f} s on {live['device']})",
                          RUN_COLORS["live"], line)
    if "series" in run:
        cols = _series_svg(run["series"], (live or {}).get("series")) + cols
    html = (head + "<div style='display:flex;gap:12px;flex-wrap:wrap;align-items:flex-start'>"
            f"<div>{_svg(curves, run['floors'])}<div style='font-size:10px;color:#555;max-width:320px'>training loss (blue: stored, "
            "orange: trained now); dashed: " + _html.escape(", ".join(f"{k} {v:.3f}" for k, v in run["floors"].items()))
            + f"</div></div>{cols}</div>")
    text = f"{panel} {state}: " + "; ".join(f"{k} {_fmt(v)}" for k, v in run["metrics"].items())
    return {"html": html, "text": text}


class LearnedView:
    """The stored run of the selected state, and a button that trains that state now (fit's callback
    drives a progress bar; labkit.device() picks the GPU when there is one) and shows it beside."""

    def __init__(self, panel: str):
        _panel(panel)
        self.panel, self.state, self.live = panel, None, {}
        self.output = W.HTML()
        self.button = W.Button(description="train this state now", icon="play",
                               tooltip="retrain the selected state live (a few seconds on a CPU)")
        self.bar = W.IntProgress(value=0, min=0, max=1, description="", layout=W.Layout(width="200px"))
        self.status = W.HTML("")
        self.button.on_click(lambda _: self.train())
        self.box = W.VBox([self.output, W.HBox([self.button, self.bar, self.status])])

    def show(self, state: str | None) -> dict:
        self.state = state
        view = render_learned(self.panel, state, live=self.live.get(state))
        self.output.value = view["html"]
        self.button.disabled = state is None
        return view

    def train(self) -> dict | None:
        if self.state is None:
            return None
        self.bar.max, self.bar.value = PANELS[self.panel]["progress"], 0
        self.status.value = f"training {_html.escape(self.state)} ..."
        self.button.disabled = True

        def tick(step, model, loss):
            self.bar.value = step + 1

        try:
            run = run_state(self.panel, self.state, callback=tick)
        finally:
            self.button.disabled = False
        self.live[self.state] = run
        self.bar.value = self.bar.max
        self.status.value = f"done: {run['steps']} steps in {run['seconds']:.1f} s on {run['device']}"
        self.show(self.state)
        return run

"""What the model learns in two fine-tuning panels: DPO (notebook 11) and scheduled sampling (notebook 07).

Both start from a model the notebook trains first, made here with the notebook's recipe and kept per
(seed, device) so the states of a panel share it: notebook 11's SFT reference (TinyCausalLM on
AnswerWorld answers, 150 steps) and notebook 07's teacher-forced checkpoint (the first weights whose
teacher-forced accuracy on 256 probe rows reaches 0.9). Each state fine-tunes a copy with the
notebook's step budget, data stream and learning rate; only the panel's setting changes.

    run_dpo(state, seed, device, callback)                 state "beta/reduction", e.g. "0.3/sum"
    run_scheduled_sampling(state, seed, device, callback)  state "shape/alpha_min" or "teacher_forcing"

Each returns {"floors", "metrics", "samples", "series", "history"} for labkit.widgets.learned.run_state;
`series` = {"x", "xlabel", "lines": {name: [value per x]}} (shares in [0, 1]). callback(step, model,
loss) ticks through the shared start (when it is trained now) and then the fine-tuning, offset by
REF_STEPS / CKPT_MAX_STEPS, so one progress bar of DPO_PROGRESS / SS_PROGRESS steps covers both.
With seed 0 on a CPU the states "0.3/sum", "0.3/token_mean" (notebook 11, section 4-5) and
"linear/0.50", "teacher_forcing" (notebook 07, first fine-tuning seed) are the notebooks' own runs.
"""
from __future__ import annotations

import copy
import math

import torch

import labkit
from labkit.batch import collate
from labkit.contracts import ContractError
from labkit.data import RunningSumTask
from labkit.models import TinyCausalLM
from labkit.paradigms.autoregressive import (ALPHA_SHAPES, alpha_schedule, causal_lm_loss, compounding,
                                             free_running_predictions, position_accuracy, scheduled_sampling_loss,
                                             teacher_forced_accuracy, teacher_forced_predictions)
from labkit.paradigms.preference import (AnswerWorld, batch_logprob, build_pair, collate_pairs, dpo_loss,
                                         load_preferences, rollout, sample_log_ratios)
from labkit.train import KeepFirstReaching, fit
from labkit.vocab import WordTokenizer, seed_vocab

__all__ = ["DPO_BETAS", "DPO_REDUCTIONS", "DPO_STATES", "DPO_PROGRESS", "SS_ALPHA_MINS", "SS_STATES", "SS_FT_STEPS",
           "SS_PROGRESS", "run_dpo", "run_scheduled_sampling", "dpo_state", "ss_state"]

# ----------------------------------------------------------------------------- DPO (notebook 11)

DPO_BETAS = (0.1, 0.3, 1.0, 3.0)                     # the panel's slider stops (0.3 = notebook 11's BETA)
DPO_REDUCTIONS = ("sum", "token_mean")
DPO_STATES = tuple(f"{b:g}/{r}" for b in DPO_BETAS for r in DPO_REDUCTIONS)
REF_STEPS, REF_BATCH, REF_LR, N_SFT = 150, 64, 3e-3, 2000      # notebook 11's SFT reference
DPO_STEPS, DPO_BATCH, DPO_LR, N_TRAIN_PAIRS = 80, 32, 4.5e-4, 600
EVAL_PER_KEY, MAX_NEW = 40, 10                                   # 400 sampled answers, as notebook 11's answer_stats
DPO_PROGRESS = REF_STEPS + DPO_STEPS

_CACHE: dict = {}


def _device(device) -> str:
    return str(torch.device(device)) if device is not None else str(labkit.device())


def _shifted(callback, offset: int):
    """callback(step, model, loss) with `offset` added to step (None stays None)."""
    if callback is None:
        return None
    return lambda step, model, loss: callback(offset + step, model, loss)


def dpo_state(state: str) -> tuple[float, str]:
    """"0.3/sum" -> (0.3, "sum")."""
    if state not in DPO_STATES:
        raise ContractError(f"unknown DPO panel state {state!r}; fix: one of {list(DPO_STATES)}")
    beta, reduction = state.split("/")
    return float(beta), reduction


def _answer_stats(policy, reference, world, seed: int) -> dict:
    """400 sampled answers (temperature 1, generator 1000 + seed): right share, filler words, tokens, the KL
    estimate mean(log pi - log ref) in nats, the share of answers by filler count, and the first answers."""
    tok = world.tokenizer
    prompts = [world.prompt(k) for k in world.KEYS] * EVAL_PER_KEY
    out = rollout(policy, tok, prompts, max_new_tokens=MAX_NEW, generator=torch.Generator().manual_seed(1000 + seed))
    parsed = [world.parse(p, r) for p, r in zip(prompts, out["responses"])]
    n = len(parsed)
    by_fillers = [sum(L == k for _, L in parsed) / n for k in range(MAX_NEW)]
    samples = [f"{p} -> {' '.join(tok.token(i) for i in r)} ({'right' if c else 'wrong'}, {L} filler words)"
               for p, r, (c, L) in list(zip(prompts, out["responses"], parsed))[:4]]
    return {"correct": sum(c for c, _ in parsed) / n, "fillers": sum(L for _, L in parsed) / n,
            "tokens": sum(len(r) for r in out["responses"]) / n,
            "kl": float(sample_log_ratios(policy, reference, out).mean()), "by_fillers": by_fillers, "samples": samples}


def _dpo_setup(seed: int, dev: str, callback=None) -> dict:
    """Notebook 11's SFT reference (trained now, or kept from an earlier state), the 800 pairs collated once,
    the reference's log-probs of every answer under both reductions, and its answer statistics."""
    key = ("dpo", seed, dev)
    if key in _CACHE:
        return _CACHE[key]
    tok = seed_vocab()
    world = AnswerWorld(tokenizer=tok)
    records = load_preferences()
    pairs = [build_pair(r, tok) for r in records]
    sft = world.sft_examples(N_SFT, seed=seed)

    def lm_loss(model, batch):
        logits = model(batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids)
        return causal_lm_loss(logits, batch.labels)

    torch.manual_seed(seed)
    reference = TinyCausalLM(len(tok), d_model=32, n_layers=2, n_heads=4, max_len=16)
    fit(reference, lambda s: collate(sft[(s * REF_BATCH) % N_SFT:][:REF_BATCH], tok.pad_id), lm_loss, steps=REF_STEPS,
        lr=REF_LR, device=dev, progress=False, callback=callback)
    reference.requires_grad_(False)
    everything = {k: v.to(dev) for k, v in collate_pairs(pairs, tok.pad_id).items()}     # chosen rows, then rejected
    with torch.no_grad():
        ref_logps = {r: batch_logprob(reference, everything, reduction=r) for r in DPO_REDUCTIONS}
    _CACHE[key] = {"world": world, "pairs": pairs, "reference": reference, "ref_logps": ref_logps,
                   "ref_stats": _answer_stats(reference, reference, world, seed)}
    return _CACHE[key]


def _pair_batches(pairs, seed: int, offset: int = 50_000):
    """step -> DPO_BATCH random pairs of the first N_TRAIN_PAIRS (notebook 11's pair_batches, offset 50 000)."""
    pad = seed_vocab().pad_id

    def get(step):
        g = torch.Generator().manual_seed(seed * 100_000 + offset + step)
        pick = torch.randint(N_TRAIN_PAIRS, (DPO_BATCH,), generator=g).tolist()
        batch = collate_pairs([pairs[i] for i in pick], pad)
        batch["index"] = torch.tensor(pick)
        return batch
    return get


def run_dpo(state: str, seed: int, device=None, callback=None) -> dict:
    """DPO from notebook 11's SFT reference at (beta, reduction): 80 steps of 32 pairs, lr 4.5e-4, the
    pairs and batch order of the notebook for this seed. Measured on 400 sampled answers (as the notebook's
    answer_stats): right-answer rate, filler words and tokens per answer, KL to the reference."""
    beta, reduction = dpo_state(state)
    dev = _device(device)
    trained_now = ("dpo", seed, dev) not in _CACHE
    setup = _dpo_setup(seed, dev, callback)
    reference, world = setup["reference"], setup["world"]
    n = len(setup["pairs"])
    ref_c, ref_r = setup["ref_logps"][reduction][:n], setup["ref_logps"][reduction][n:]
    if callback is not None and not trained_now:
        callback(REF_STEPS - 1, reference, float("nan"))           # the reference was kept: its part of the bar is done

    def loss_fn(model, batch):
        pi_c, pi_r = batch_logprob(model, batch, reduction=reduction).chunk(2)
        idx = batch["index"]
        return dpo_loss(pi_c, pi_r, ref_c[idx], ref_r[idx], beta=beta)

    policy = copy.deepcopy(reference).requires_grad_(True)
    hist = fit(policy, _pair_batches(setup["pairs"], seed), loss_fn, steps=DPO_STEPS, lr=DPO_LR, device=dev,
               progress=False, callback=_shifted(callback, REF_STEPS))
    s, r = _answer_stats(policy, reference, world, seed), setup["ref_stats"]
    metrics = {"KL to the reference on sampled answers (nats)": s["kl"], "filler words per answer": s["fillers"],
               "tokens per answer (with <eos>)": s["tokens"], "right-answer rate": s["correct"],
               "the reference: filler words per answer": r["fillers"], "the reference: right-answer rate": r["correct"]}
    series = {"x": list(range(MAX_NEW)), "xlabel": "filler words in an answer",
              "lines": {"share of answers, after DPO": s["by_fillers"], "share of answers, the reference": r["by_fillers"]}}
    return {"floors": {"log 2: the loss at the start (policy = reference)": math.log(2)}, "metrics": metrics,
            "samples": s["samples"], "series": series, "history": hist}


# ----------------------------------------------------------------------------- scheduled sampling (notebook 07)

SS_ALPHA_MINS = (0.0, 0.25, 0.5, 0.75)       # the panel's slider stops below 1; alpha_min = 1 is teacher forcing
SS_STATES = tuple(f"{shape}/{a:.2f}" for shape in ALPHA_SHAPES for a in SS_ALPHA_MINS) + ("teacher_forcing",)
CKPT_MAX_STEPS, CKPT_BATCH, CKPT_LR, CKPT_TARGET = 300, 32, 2e-3, 0.9     # notebook 07's checkpoint
SS_FT_STEPS, SS_FT_LR = 60, 5e-4                                          # notebook 07's fine-tuning
N_VAL_ROWS, N_PROBE_ROWS = 512, 256
SS_PROGRESS = CKPT_MAX_STEPS + SS_FT_STEPS


def ss_state(state: str) -> tuple[str, float]:
    """"linear/0.50" -> ("linear", 0.5); "teacher_forcing" -> ("constant", 1.0) (alpha = 1 throughout)."""
    if state not in SS_STATES:
        raise ContractError(f"unknown scheduled-sampling panel state {state!r}; fix: one of {list(SS_STATES)}")
    if state == "teacher_forcing":
        return "constant", 1.0
    shape, alpha_min = state.split("/")
    return shape, float(alpha_min)


def _ss_task() -> RunningSumTask:
    return RunningSumTask(n_steps=16, max_step=4, tokenizer=WordTokenizer([str(d) for d in range(10)]))


def _ss_model(task: RunningSumTask, seed: int) -> TinyCausalLM:
    torch.manual_seed(seed)
    return TinyCausalLM(len(task.tokenizer), d_model=32, n_layers=2, n_heads=4, max_len=task.length)


def _tf_loss(model, batch):
    x, y, _ = batch
    return causal_lm_loss(model(x), y)


def _ss_scores(model, task: RunningSumTask, val: torch.Tensor) -> dict:
    """Per answer position: free-running and teacher-forced accuracy on `val`; P(error | earlier error)."""
    P, gold = task.prompt_len, val[:, task.prompt_len:].cpu()
    fr = free_running_predictions(model, val[:, :P], task.n, task.tokenizer.pad_id)
    tf = teacher_forced_predictions(model, val, P)
    return {"fr": position_accuracy(fr, gold), "tf": position_accuracy(tf, gold), "fr_tokens": fr,
            "after_error": compounding(task.errors(val, fr))["after_error"]}


def _ss_setup(seed: int, dev: str, callback=None) -> dict:
    """Notebook 07's checkpoint: teacher forcing from _ss_model(seed) on batches(seed), lr 2e-3, probing
    the teacher-forced accuracy on 256 probe rows every 10 updates; the first weights reaching 0.9 (training
    stops there; the last weights if none does within 300 updates). Kept per (seed, device)."""
    key = ("ss", seed, dev)
    if key in _CACHE:
        return _CACHE[key]
    task = _ss_task()
    P = task.prompt_len
    val = task.sample(N_VAL_ROWS, torch.Generator().manual_seed(seed + 100)).to(dev)
    probe_rows = task.sample(N_PROBE_ROWS, torch.Generator().manual_seed(seed + 200)).to(dev)
    probe = KeepFirstReaching(lambda m: teacher_forced_accuracy(m, probe_rows, P), CKPT_TARGET, stop=True,
                              then=callback)
    model = _ss_model(task, seed)
    fit(model, task.batches(CKPT_BATCH, seed), _tf_loss, steps=CKPT_MAX_STEPS, lr=CKPT_LR, device=dev, progress=False,
        callback=probe)
    model.eval()
    scores = _ss_scores(model, task, val)
    slipped = (scores["fr_tokens"] != val[:, P:].cpu()).any(1).nonzero().flatten().tolist()
    updates = probe.step if probe.reached else CKPT_MAX_STEPS
    _CACHE[key] = {"task": task, "val": val, "checkpoint": model, "updates": updates, "scores": scores,
                   "rows": (slipped + [0, 1])[:2]}
    return _CACHE[key]


def run_scheduled_sampling(state: str, seed: int, device=None, callback=None) -> dict:
    """Fine-tune notebook 07's checkpoint for 60 steps (lr 5e-4) with scheduled sampling (parallel mode,
    proposals sampled from the model, alpha = alpha_schedule(step, 60, shape, alpha_min)), or with teacher
    forcing; the batches and coins of the notebook's first fine-tuning seed (10 * seed). Measured on the
    notebook's 512 validation rows: accuracy by answer position, free running and teacher forced."""
    shape, alpha_min = ss_state(state)
    dev = _device(device)
    trained_now = ("ss", seed, dev) not in _CACHE
    setup = _ss_setup(seed, dev, callback)
    task, val, P = setup["task"], setup["val"], setup["task"].prompt_len
    if callback is not None and not trained_now:
        callback(CKPT_MAX_STEPS - 1, setup["checkpoint"], float("nan"))
    ft_seed = 10 * seed
    coins = torch.Generator().manual_seed(2000 + ft_seed)

    def ss_loss(model, batch):
        x, y, step = batch
        return scheduled_sampling_loss(model, x, y, alpha_schedule(step, SS_FT_STEPS, shape, alpha_min=alpha_min), P, coins)[0]

    model = copy.deepcopy(setup["checkpoint"])
    hist = fit(model, task.batches(CKPT_BATCH, 1000 + ft_seed), _tf_loss if state == "teacher_forcing" else ss_loss,
               steps=SS_FT_STEPS, lr=SS_FT_LR, device=dev, progress=False, callback=_shifted(callback, CKPT_MAX_STEPS))
    s, c = _ss_scores(model, task, val), setup["scores"]
    metrics = {"free-running accuracy (mean over the 16 positions)": s["fr"].mean().item(),
               "free-running accuracy at position 16": s["fr"][-1].item(),
               "teacher-forced accuracy (gold prefixes)": s["tf"].mean().item(),
               "P(error | earlier error), free running": s["after_error"],
               "the checkpoint: free-running accuracy": c["fr"].mean().item(),
               "the checkpoint: teacher-forced accuracy": c["tf"].mean().item(),
               "the checkpoint: updates of teacher forcing": setup["updates"]}
    name = task.tokenizer.token

    def marked(tokens, gold):
        return " ".join(name(i) + ("" if i == g else "*") for i, g in zip(tokens, gold))

    samples = []
    for b in setup["rows"]:                 # two rows the checkpoint got wrong free running (* = a wrong count)
        gold = val[b, P:].cpu().tolist()
        samples.append(f"row {b}: gold {' '.join(name(i) for i in gold)} | the checkpoint "
                       f"{marked(c['fr_tokens'][b].tolist(), gold)} | fine-tuned {marked(s['fr_tokens'][b].tolist(), gold)}")
    series = {"x": list(range(1, task.n + 1)), "xlabel": "answer position",
              "lines": {"free running, fine-tuned": s["fr"].tolist(), "teacher forced, fine-tuned": s["tf"].tolist(),
                        "free running, the checkpoint": c["fr"].tolist()}}
    return {"floors": {"exact model (every count follows from the prompt)": 0.0}, "metrics": metrics,
            "samples": samples, "series": series, "history": hist}

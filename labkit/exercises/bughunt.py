"""Notebook 13: the chapter's smoke-test table as runnable checks, and a bug hunt graded by behaviour.

(Moved from labkit/bughunt.py to labkit/exercises/bughunt.py: it holds exercise graders.)

`smoke_test_table()` runs every row of the table (AR LM, SFT, packed LM, masked LM, contrastive,
distillation, preference, curriculum) on a correct and on a deliberately broken pipeline.
The `check_*` functions grade a student's fix of a broken training pipeline by training a tiny
model with it and measuring what the model does (next-token accuracy against the Bayes limit,
whether it stops with <eos>, whether packed documents read each other), never by reading code.

Per-student hunts: `draw_bug_hunt(student_id)` draws, from a seed derived from the id, which bug
each of the three pipelines carries and where the fix has to go: whether the loss shifts (so the
batch must not) or not (so the batch must), which collator (right or left padding) and which bug
in it, and which mask convention the attention expects (True = may attend, or True = blocked).
A fix copied from another student fails whenever one of these differs. `check_hunt(fn, k, id)`
grades pipeline k of that student's draw by the trained model's behaviour.
"""
from __future__ import annotations

from typing import Callable, Sequence

import hashlib
import os
import random
from dataclasses import dataclass, field

import torch

from labkit.batch import position_ids_from_mask
from labkit.contracts import IGNORE, ContractError
from labkit.exercises.common import fail as _fail

# ----------------------------------------------------------------------------- small smoke checks


def assert_no_cross_document(model, doc_a: Sequence[int], doc_a_changed: Sequence[int], doc_b: Sequence[int],
                             block_diagonal: bool = True, tol: float = 1e-5) -> float:
    """The packed-LM smoke test: document B's logits must not move when the document packed before
    it changes (cross_document_sensitivity <= tol). Returns the sensitivity."""
    from labkit.paradigms.autoregressive import cross_document_sensitivity

    s = cross_document_sensitivity(model, doc_a, doc_a_changed, doc_b, block_diagonal=block_diagonal)
    if s > tol:
        raise ContractError(f"a later packed document reads an earlier one: its logits move by {s:.3g} when the earlier "
                            "document changes (cross-document attention). Fix: pack(..., block_diagonal=True) with "
                            "positions restarted per document, or pass the boundaries to the attention kernel")
    return s


def assert_gathered_diagonal(targets, rank: int, local_batch: int, world_size: int) -> None:
    """The contrastive smoke test after an all-gather: local query i of `rank` must target column
    rank * local_batch + i of the [B_local, world_size * B_local] logits (its own key).

    Builds orthonormal keys, gathers them in rank order and checks that each target column holds
    the query's own key (the diagonal pair of the global batch)."""
    n = world_size * local_batch
    keys = torch.eye(n)                                # every rank's keys, gathered in rank order
    q = keys[rank * local_batch:(rank + 1) * local_batch]
    own = (q @ keys.T).argmax(-1)                      # where the positive sits in the gathered logits
    t = torch.as_tensor(targets).flatten().long()
    if t.shape != own.shape:
        raise ContractError(f"targets must have one entry per local query ({local_batch}), got {tuple(t.shape)}")
    if not torch.equal(t, own):
        hint = " (they index the local batch: arange(B_local))" if torch.equal(t, torch.arange(local_batch)) else ""
        raise ContractError(f"contrastive targets {t.tolist()[:6]} on rank {rank} are not the diagonal pairs {own.tolist()[:6]} of "
                            f"the gathered batch{hint}: queries are pushed towards another rank's examples. Fix: targets = "
                            "rank * B_local + arange(B_local) (gathered_targets)")


def assert_distillation_contract(teacher_tokenizer, student_tokenizer, teacher_T: float, student_T: float) -> None:
    """The distillation smoke test: same vocabulary id by id (assert_same_event_space) and the same
    temperature on both sides of the KL."""
    from labkit.paradigms.distillation import assert_same_event_space

    assert_same_event_space(teacher_tokenizer, student_tokenizer)
    if float(teacher_T) != float(student_T):
        raise ContractError(f"teacher softened with T={teacher_T}, student with T={student_T}: the student is pulled towards "
                            "a distribution of another sharpness. Fix: one T for both (kd_loss(..., T)), scaled by T^2")


# ----------------------------------------------------------------------------- the table

def _row_results(name: str, run: Callable[[bool], object]) -> list[dict]:
    rows = []
    for pipeline, broken in (("correct", False), ("broken", True)):
        try:
            run(broken)
            rows.append({"row": name, "pipeline": pipeline, "passed": True, "message": "ok"})
        except (ContractError, AssertionError) as err:
            rows.append({"row": name, "pipeline": pipeline, "passed": False, "message": str(err)})
    return rows


def smoke_test_table(seed: int = 0) -> list[dict]:
    """Every row of the chapter's smoke-test table on a correct and a broken pipeline.

    Returns 16 dicts (row, pipeline 'correct'/'broken', passed, message); a healthy lab has
    passed == (pipeline == 'correct') on every row, and each broken message names bug and fix.
    """
    from labkit.checks import assert_golden_shift, assert_masked_targets, assert_prompt_masked
    from labkit.models import TinyCausalLM
    from labkit.paradigms.autoregressive import ar_example, causal_lm_loss, completion_example
    from labkit.paradigms.masked import mask_positions
    from labkit.paradigms.mixture import MixtureSampler, assert_mixture_proportions
    from labkit.paradigms.preference import assert_same_prompt, chat_example
    from labkit.paradigms.contrastive import gathered_targets
    from labkit.vocab import WordTokenizer, seed_vocab

    tok = seed_vocab()
    record = tok.encode("<bos> the cat sat on the mat <eos>")

    def ar(broken):
        shift = "external" if broken else "internal"           # external labels + a shifting loss = double shift
        assert_golden_shift(record, lambda r: ar_example(r, shift), lambda z, y: causal_lm_loss(z, y, shift=True), len(tok))

    def sft(broken):
        prompt, answer = tok.encode("<user> where is the cat <assistant>"), tok.encode("on the mat <eos>")
        ex = completion_example(prompt, answer, train_on_prompt=broken)
        assert_prompt_masked(torch.tensor(ex["labels"]), len(prompt))
        if all(y == IGNORE for y in ex["labels"][len(prompt):]):
            raise ContractError("the assistant's tokens have no labels; fix: label the completion")

    def packed(broken):
        torch.manual_seed(seed)
        model = TinyCausalLM(len(tok), d_model=16, n_layers=1, n_heads=2, max_len=32).eval()
        with torch.no_grad():
            assert_no_cross_document(model, tok.encode("<bos> the cat sat <eos>"), tok.encode("<bos> a dog ran to the rug <eos>"),
                                     tok.encode("<bos> the mat <eos>"), block_diagonal=not broken)

    def masked(broken):
        ex = mask_positions(record, [2, 4], tok.mask_id)
        labels = list(record) if broken else ex["labels"]       # broken: every position graded (a copy task)
        assert_masked_targets(ex["input_ids"], labels, record, tok.mask_id)

    def contrastive(broken):
        rank, B, R = 1, 4, 2
        targets = torch.arange(B) if broken else gathered_targets(rank, B)
        assert_gathered_diagonal(targets, rank, B, R)

    def distillation(broken):
        student = WordTokenizer(list(tok.itos[len(tok.specials):]) + ["extra"]) if broken else tok
        assert_distillation_contract(tok, student, 2.0, 2.0)

    def preference(broken):
        c_ids, c_mask = chat_example(tok, "where is the cat", "on the mat")
        r_prompt = "where is the dog" if broken else "where is the cat"   # broken: rejected rendered from another prompt
        r_ids, r_mask = chat_example(tok, r_prompt, "the cat sat")
        assert_same_prompt(c_ids, c_mask, r_ids, r_mask)

    def curriculum(broken):
        sizes, weights = [8000, 1500, 500], [0.5, 0.3, 0.2]
        w = [n / sum(sizes) for n in sizes] if broken else weights     # broken: a size-proportional loader
        src, _ = MixtureSampler(sizes, w, seed=seed).sample(5000)
        assert_mixture_proportions(torch.bincount(src, minlength=3), weights)

    table = []
    for name, run in [("AR LM", ar), ("SFT", sft), ("packed LM", packed), ("masked LM", masked),
                      ("contrastive", contrastive), ("distillation", distillation), ("preference", preference),
                      ("curriculum", curriculum)]:
        table += _row_results(name, run)
    return table


# ----------------------------------------------------------------------------- bug hunt: shared training

def _tiny_lm(vocab_size: int, seed: int, max_len: int = 32):
    from labkit.models import TinyCausalLM

    torch.manual_seed(seed)
    return TinyCausalLM(vocab_size, d_model=32, n_layers=2, n_heads=4, max_len=max_len)


def _world(tokenizer=None):
    from labkit.data import MarkovWorld
    from labkit.vocab import seed_vocab

    return MarkovWorld(tokenizer=tokenizer or seed_vocab())


def sentence_conditionals(world, max_len: int) -> torch.Tensor:
    """p(x_{t+1} = j | x_t = s, position t) of the sentences world.sample_sentences(max_len=max_len) draws,
    [max_len, V, V] float64 (rows of impossible (t, s), and of <eos>, after which nothing follows, are 0).

    sample_sentences keeps only chains that reach <eos> within max_len tokens, so its sentences are
    the chain CONDITIONED on ending in time: with f[t, s] = P(<eos> at a position <= max_len - 1 | x_t = s)
    (f = 1 at <eos>; backwards, f[t] = P f[t+1]),
        p(j | s, t) = P[s, j] f[t+1, j] / f[t, s],
    which puts more weight on <eos> late in a sentence than the chain's own P[s] does. A model whose
    positions restart per document can learn this, so it is the right yardstick for packed sentences.
    """
    P = world.P
    V, eos = P.shape[0], world.tokenizer.eos_id
    f = torch.zeros(max_len, V, dtype=torch.float64)
    f[max_len - 1, eos] = 1.0
    for t in range(max_len - 2, -1, -1):
        f[t] = P @ f[t + 1]
        f[t, eos] = 1.0
    cond = torch.zeros(max_len, V, V, dtype=torch.float64)
    for t in range(max_len - 1):
        ok = f[t] > 0
        ok[eos] = False                          # the sentence has ended: nothing follows <eos>
        cond[t, ok] = P[ok] * f[t + 1][None, :] / f[t, ok][:, None]
    return cond


def bayes_on_positions(cond: torch.Tensor, context: torch.Tensor, position: torch.Tensor,
                       predicted: torch.Tensor | None = None) -> tuple[float, float | None]:
    """The Bayes limit of next-token accuracy on the positions actually evaluated, and a model's expected
    accuracy there.

    cond [T, V, V] = p(next | token, position) (sentence_conditionals, or the chain's P repeated for
    stationary text); context, position: [N] the token and its position that predict each evaluated
    target. Returns (mean_n max_j cond[t_n, s_n, j], mean_n cond[t_n, s_n, predicted_n] or None): the
    best possible expected accuracy on these contexts, and the model's, both free of label sampling
    noise. A model that reads only the past cannot exceed the first on average.
    """
    p = cond[position.long(), context.long()]                 # [N, V]
    bayes = float(p.max(-1).values.mean())
    expected = None if predicted is None else float(p.gather(-1, predicted.long()[:, None]).mean())
    return bayes, expected


# ----------------------------------------------------------------------------- bug 1: the LM batch

def train_lm_pipeline(make_batch: Callable, seed: int = 0, steps: int = 150, batch_size: int = 32, block_len: int = 25,
                      loss_shifts: bool = True) -> dict:
    """Train a tiny causal LM with make_batch(block [B, L] ids) -> dict(input_ids, labels) and the loss
    causal_lm_loss(shift=loss_shifts) (shift=True: logit t vs label t+1; False: logit t vs label t).
    Returns next-token accuracy on held-out windows (k=1), accuracy at t+2 and at t (copy), and the
    world's Bayes limit."""
    from labkit.paradigms.autoregressive import causal_lm_loss, offset_accuracy
    from labkit.train import fit

    world = _world()
    train = world.sample_windows(steps * batch_size, block_len, torch.Generator().manual_seed(seed))
    val = world.sample_windows(256, block_len, torch.Generator().manual_seed(seed + 1000))
    batches = []
    for i in range(steps):
        b = make_batch(train[i * batch_size:(i + 1) * batch_size])
        if not isinstance(b, dict) or "input_ids" not in b or "labels" not in b:
            _fail("make_batch must return a dict with 'input_ids' and 'labels'")
        if b["input_ids"].shape != b["labels"].shape:
            _fail(f"input_ids {tuple(b['input_ids'].shape)} and labels {tuple(b['labels'].shape)} must have one shape "
                  "(the loss compares logit t with label t+1 inside the same row)")
        batches.append(b)
    model = _tiny_lm(world.vocab_size, seed)
    fit(model, lambda i: batches[i], lambda m, b: causal_lm_loss(m(b["input_ids"]), b["labels"], shift=loss_shifts),
        steps=steps, lr=5e-3, progress=False, device="cpu")
    with torch.no_grad():
        logits = model(val)
    # stationary windows: the next token depends on the current one only, p(next | s) = P[s] at every position
    cond = world.P[None]
    bayes, expected = bayes_on_positions(cond, val[:, :-1].flatten(), torch.zeros(val[:, :-1].numel(), dtype=torch.long),
                                         logits[:, :-1].argmax(-1).flatten())
    return {"acc": offset_accuracy(logits, val, 1), "acc_t2": offset_accuracy(logits, val, 2),
            "acc_copy": float(logits.argmax(-1).eq(val).float().mean()), "bayes": bayes, "acc_expected": expected}


def check_lm_batch(make_batch: Callable, seed: int = 0, margin: float = 0.06, loss_shifts: bool = True) -> dict:
    """Bug hunt 1: the fixed make_batch must train a model whose next-token accuracy reaches the
    Bayes limit (within `margin`) with the pipeline's loss (loss_shifts: whether it shifts itself).
    Raises AssertionError naming the misconception; returns the numbers."""
    r = train_lm_pipeline(make_batch, seed, loss_shifts=loss_shifts)
    if r["acc"] >= r["bayes"] - margin:
        return r
    if r["acc_t2"] > r["acc"]:
        where = ("The loss already shifts, so labels must be the unshifted input ids (labels = input_ids), not x[1:]"
                 if loss_shifts else "This loss does not shift, so shift exactly once in the batch: inputs x[:, :-1], "
                 "labels x[:, 1:], not twice")
        _fail(f"the model predicts the token two steps ahead (accuracy at t+2 {r['acc_t2']:.2f} > next-token {r['acc']:.2f}, "
              f"Bayes limit {r['bayes']:.2f}): double shift. {where}")
    if r["acc_copy"] > 0.5:
        where = ("" if loss_shifts else " This loss compares logit t with label t, so the batch must do the shift: "
                 "inputs x[:, :-1], labels x[:, 1:]")
        _fail(f"the model copies its input (copy accuracy {r['acc_copy']:.2f}): nothing is shifted. Fix: shift exactly once.{where}")
    _fail(f"next-token accuracy {r['acc']:.2f} stays below the Bayes limit {r['bayes']:.2f} - {margin}: "
          "are inputs and labels the same tokens of the same block?")


# ----------------------------------------------------------------------------- bug 2: pad == eos

def train_stop_pipeline(collate: Callable, seed: int = 0, steps: int = 120, batch_size: int = 32, side: str = "right") -> dict:
    """Train a tiny causal LM on MarkovWorld sentences ("<bos> ... <eos>") batched by
    collate(sentences, pad_id) -> dict(input_ids, attention_mask, labels), with pad_id == eos_id
    (as in many checkpoints); positions come from the attention mask, so either padding side trains
    the same model. Returns the share of greedy continuations that stop with <eos> within 16 tokens,
    audit()'s finding codes on the first batch, and the padding side the batches used; batches padded
    on another side than `side` (the pipeline's tokenizer) fail before any training."""
    from labkit.checks import audit
    from labkit.paradigms.autoregressive import causal_lm_loss, generate
    from labkit.train import fit

    world = _world()
    tok = world.tokenizer
    eos = tok.eos_id
    sents = world.sample_sentences(steps * batch_size, torch.Generator().manual_seed(seed), max_len=16)
    batches = []
    for i in range(steps):
        b = collate(sents[i * batch_size:(i + 1) * batch_size], eos)
        if not isinstance(b, dict) or not {"input_ids", "attention_mask", "labels"} <= set(b):
            _fail("collate must return a dict with input_ids, attention_mask and labels")
        batches.append(b)
    first = batches[0]
    codes = sorted({f.code for f in audit({k: first[k] for k in ("input_ids", "attention_mask", "labels")},
                                          pad_id=eos, eos_id=eos)})
    m0 = torch.as_tensor(first["attention_mask"])
    used = "right" if bool(m0[:, 0].all()) else "left" if bool(m0[:, -1].all()) else "mixed"
    if used != side:
        _fail(f"this pipeline's collator pads on the {side} (its tokenizer's padding_side), but your batches are padded "
              f"on the {used}. Fix: pad(sentences, pad_id, side={side!r}) and derive labels from that batch")
    model = _tiny_lm(len(tok), seed)

    def loss(m, b):
        mask = torch.as_tensor(b["attention_mask"])
        return causal_lm_loss(m(b["input_ids"], attention_mask=mask, position_ids=position_ids_from_mask(mask)),
                              b["labels"], shift=True)

    fit(model, lambda i: batches[i], loss, steps=steps, lr=5e-3, progress=False, device="cpu")
    prompts = [s[:2] for s in world.sample_sentences(64, torch.Generator().manual_seed(seed + 1000), max_len=16)]
    outs = generate(model, prompts, max_new_tokens=16, pad_id=eos, eos_id=eos)
    return {"stop_rate": sum(eos in o for o in outs) / len(outs), "codes": codes, "side": used}


def check_pad_eos_collate(collate: Callable, seed: int = 0, min_stop: float = 0.8, side: str = "right") -> dict:
    """Bug hunt 2: with pad == eos the fixed collate must pad on the pipeline's side, train a model
    that ends its sentences (>= min_stop of greedy continuations emit <eos>) and not supervise padding."""
    r = train_stop_pipeline(collate, seed, side=side)
    if "supervised_padding" in r["codes"]:
        _fail("padding positions have labels: the model is trained to predict padding and the denominator counts it. "
              "Fix: labels = -100 where attention_mask == 0, and keep the real <eos> as a target")
    if r["stop_rate"] < min_stop:
        why = (" Each real <eos> got label -100: with pad_id == eos_id, masking labels by token id also masks the end of "
               "every sentence. Fix: mask by attention_mask (labels[attention_mask == 0] = -100), not by input_ids == pad_id"
               if "eos_label_masked" in r["codes"] else "")
        _fail(f"only {r['stop_rate']:.0%} of the model's continuations stop with <eos>: it never learned to stop.{why}")
    return r


# ----------------------------------------------------------------------------- bug 3: packed attention

def train_packed_pipeline(attention: Callable, seed: int = 0, steps: int = 100, rows: int = 16, max_len: int = 32,
                          convention: str = "keep") -> dict:
    """Train a tiny causal LM on packed MarkovWorld sentences (labkit.batch.pack: positions restart,
    first label of each document -100) whose [B,T,T] attention mask is attention(document_ids [B,T],
    -1 = padding) -> bool [B,T,T] (True = may attend). Returns how far document B's logits move
    when the document packed before it changes (leak; 0 = no leak), the held-out next-token accuracy
    (acc; above the Bayes limit means the model read the future), and the Bayes limit of exactly the
    evaluated positions (bayes: from the known conditionals of length-limited sentences given the
    token and its position, sentence_conditionals) with the model's expected accuracy there
    (acc_expected: its argmax scored by those conditionals, free of label sampling noise).
    convention "keep": attention() returns True where a query may attend; "block": True where it may
    not (the masked_fill convention); the pipeline turns either into the model's allowed mask."""
    if convention not in ("keep", "block"):
        raise ContractError(f"convention must be 'keep' or 'block', got {convention!r}")
    user_attention = attention

    def attention(document_ids):
        m = user_attention(document_ids)
        if isinstance(m, torch.Tensor) and convention == "block":
            return ~m.bool()
        return m

    from labkit.batch import pack
    from labkit.paradigms.autoregressive import causal_lm_loss
    from labkit.train import fit

    world = _world()
    tok = world.tokenizer
    g = torch.Generator().manual_seed(seed)
    sentence_len = 12                        # sample_sentences keeps sentences of at most this many tokens

    def packed(n_sent, gen):
        b = pack([{"input_ids": s} for s in world.sample_sentences(n_sent, gen, max_len=sentence_len)], max_len=max_len)
        mask = attention(b.document_ids)
        if not isinstance(mask, torch.Tensor) or mask.shape != (b.input_ids.shape[0], b.input_ids.shape[1], b.input_ids.shape[1]):
            _fail(f"attention must return a [B,T,T] bool tensor, got {getattr(mask, 'shape', type(mask))}")
        return {"input_ids": b.input_ids, "attention_mask": mask.bool(), "position_ids": b.position_ids, "labels": b.labels}

    batches = [packed(rows * 4, g) for _ in range(steps)]
    model = _tiny_lm(len(tok), seed, max_len=max_len)
    fit(model, lambda i: batches[i], lambda m, b: causal_lm_loss(m(b["input_ids"], attention_mask=b["attention_mask"],
                                                                   position_ids=b["position_ids"]), b["labels"], shift=True),
        steps=steps, lr=5e-3, progress=False, device="cpu")
    val = packed(rows * 4, torch.Generator().manual_seed(seed + 1000))
    with torch.no_grad():
        logits = model(val["input_ids"], attention_mask=val["attention_mask"], position_ids=val["position_ids"])
        if not torch.isfinite(logits).all():
            _fail("the logits are NaN: some query may attend nothing (a padding row of the mask is all False). "
                  "Fix: let every position attend at least itself")
        y = val["labels"][:, 1:]
        keep = y.ne(IGNORE)
        predicted = logits[:, :-1].argmax(-1)[keep]
        acc = float(predicted.eq(y[keep]).float().mean())
        bayes, expected = bayes_on_positions(sentence_conditionals(world, sentence_len), val["input_ids"][:, :-1][keep],
                                             val["position_ids"][:, :-1][keep], predicted)
        a, a2, b_doc = (tok.encode(t) for t in ("<bos> the cat sat <eos>", "<bos> a dog ran to the rug <eos>", "<bos> the mat <eos>"))
        outs = []
        for first in (a, a2):
            ids = torch.tensor([first + b_doc])
            docs = torch.tensor([[0] * len(first) + [1] * len(b_doc)])
            pos = torch.tensor([list(range(len(first))) + list(range(len(b_doc)))])
            outs.append(model(ids, attention_mask=attention(docs).bool(), position_ids=pos)[0, -len(b_doc):])
        leak = float((outs[0] - outs[1]).abs().max())
    return {"leak": leak, "acc": acc, "bayes": bayes, "acc_expected": expected, "n_eval": int(keep.sum())}


def check_packed_attention(attention: Callable, seed: int = 0, tol: float = 1e-5, margin: float = 0.1,
                           convention: str = "keep") -> dict:
    """Bug hunt 3: the fixed mask must give a trained model whose later document does not move when
    an earlier one changes, and which does not beat the Bayes limit (it cannot read the future)."""
    hint = (" (This pipeline reads True as BLOCKED, the masked_fill convention: return the positions a query may NOT "
            "attend.)" if convention == "block" else "")
    try:
        r = train_packed_pipeline(attention, seed, convention=convention)
    except AssertionError as err:
        raise AssertionError(f"{err}{hint}") from None
    if r["acc"] > r["bayes"] + margin:
        _fail(f"held-out next-token accuracy {r['acc']:.2f} beats the Bayes limit {r['bayes']:.2f}: the model reads the token "
              "it must predict. Your mask is not causal; fix: AND the same-document mask with a lower-triangular one" + hint)
    if r["leak"] > tol:
        _fail(f"the second document's logits move by {r['leak']:.3g} when the first document changes: packed documents "
              "attend to each other. Fix: allow (i, j) only when document_ids[i] == document_ids[j] (and j <= i)" + hint)
    return r


# ----------------------------------------------------------------------------- per-student bug hunts

DEMO_ID = "demo"
_LM_BUGS = {   # (loss shifts?) -> {bug: buggy body}
    True: {"double-shift": 'return {"input_ids": block[:, :-1], "labels": block[:, 1:]}',
           "rolled-labels": 'return {"input_ids": block, "labels": block.roll(-1, dims=1)}'},
    False: {"no-shift": 'return {"input_ids": block, "labels": block}',
            "shift-backwards": 'return {"input_ids": block[:, 1:], "labels": block[:, :-1]}'},
}
_COLLATE_BUGS = {
    "mask-by-id": "labels = input_ids.masked_fill(input_ids.eq(pad_id), IGNORE)",
    "no-mask": "labels = input_ids.clone()",
}
_ATTENTION_BUGS = {
    "causal-only": "allowed = causal.expand(B, T, T)",
    "same-document-only": "allowed = same | eye",
}


def student_id(default: str = DEMO_ID) -> str:
    """The student id the grader runs under (LABKIT_STUDENT_ID), else `default` (the notebook's STUDENT_ID)."""
    return os.environ.get("LABKIT_STUDENT_ID") or default


def student_seed(student: str) -> int:
    """A seed derived from the student id (sha256), the same on every machine."""
    if not isinstance(student, str) or not student.strip():
        raise ContractError(f"the student id must be a non-empty string, got {student!r}; fix: STUDENT_ID = 'your id'")
    return int(hashlib.sha256(student.strip().encode()).hexdigest()[:12], 16)


@dataclass
class Pipeline:
    """One pipeline of a bug hunt: its kind, the drawn contract (options), the bug and its code."""
    k: int
    kind: str                    # "batch" | "collate" | "attention"
    bug: str
    options: dict = field(default_factory=dict)
    code: str = ""

    def buggy(self) -> Callable:
        """The buggy function, compiled from self.code."""
        from labkit.batch import pad
        space = {"torch": torch, "IGNORE": IGNORE, "pad": pad}
        exec(compile(self.code, f"<bug hunt pipeline {self.k}>", "exec"), space)
        return space[self.code.split("def ", 1)[1].split("(", 1)[0]]

    def card(self) -> str:
        """What the learner reads: the pipeline's contract and its buggy code."""
        o = self.options
        if self.kind == "batch":
            head = ("The loss is causal_lm_loss(logits, labels, shift=True): it compares logit t with label t+1 itself."
                    if o["loss_shifts"] else
                    "The loss is causal_lm_loss(logits, labels, shift=False): it compares logit t with label t, so the "
                    "batch must already pair each input with the token that follows it.")
        elif self.kind == "collate":
            head = (f"The checkpoint has no pad token, so pad_id == eos_id. Its tokenizer pads on the {o['side']}; "
                    "positions are computed from the attention mask; the loss shifts (logit t predicts label t+1).")
        else:
            head = ("The model reads the returned mask as True = may attend." if o["convention"] == "keep" else
                    "The model reads the returned mask as True = BLOCKED (the masked_fill convention).") + \
                   " document_ids [B, T] holds -1 on padding."
        return f"Pipeline {self.k} ({self.kind}). {head}\n\n{self.code}"


def draw_bug_hunt(student: str) -> list[Pipeline]:
    """The three pipelines of `student`'s bug hunt, drawn from student_seed(student).

    DEMO_ID draws the worked examples of notebook 13 (a shifting loss with a double shift, a
    right-padding collator masking labels by id, a True-=-may-attend mask that is causal only)."""
    if student == DEMO_ID:
        lm, side, cbug, conv, abug = (True, "double-shift"), "right", "mask-by-id", "keep", "causal-only"
    else:
        rng = random.Random(student_seed(student))
        shifts = rng.random() < 0.5
        lm = (shifts, rng.choice(sorted(_LM_BUGS[shifts])))
        side, cbug = rng.choice(["right", "left"]), rng.choice(sorted(_COLLATE_BUGS))
        conv, abug = rng.choice(["keep", "block"]), rng.choice(sorted(_ATTENTION_BUGS))
    batch = (f"def buggy_lm_batch(block):\n    \"\"\"block [B, L] token ids -> the training batch.\"\"\"\n"
             f"    {_LM_BUGS[lm[0]][lm[1]]}\n")
    collate = ("def buggy_collate(sentences, pad_id):\n"
               "    \"\"\"sentences: lists of ids (\"<bos> ... <eos>\") -> input_ids, attention_mask, labels.\"\"\"\n"
               f"    input_ids, attention_mask = pad(sentences, pad_id, {side!r})\n"
               f"    {_COLLATE_BUGS[cbug]}\n"
               "    return {\"input_ids\": input_ids, \"attention_mask\": attention_mask, \"labels\": labels}\n")
    ret = "allowed" if conv == "keep" else "~allowed"
    attention = ("def buggy_attention(document_ids):\n"
                 f"    \"\"\"document_ids [B, T] -> bool [B, T, T] ({'True = may attend' if conv == 'keep' else 'True = blocked'}).\"\"\"\n"
                 "    B, T = document_ids.shape\n"
                 "    causal = torch.ones(T, T, dtype=torch.bool).tril()\n"
                 "    same = document_ids[:, :, None].eq(document_ids[:, None, :])\n"
                 "    eye = torch.eye(T, dtype=torch.bool)\n"
                 f"    {_ATTENTION_BUGS[abug]}\n"
                 f"    return {ret}\n")
    return [Pipeline(1, "batch", lm[1], {"loss_shifts": lm[0]}, batch),
            Pipeline(2, "collate", cbug, {"side": side}, collate),
            Pipeline(3, "attention", abug, {"convention": conv}, attention)]


def check_hunt(fn: Callable, k: int, student: str, seed: int = 0) -> dict:
    """Grade the learner's fix of pipeline k (1, 2, 3) of `student`'s hunt by the trained model's
    behaviour (check_lm_batch, check_pad_eos_collate, check_packed_attention with the drawn contract)."""
    if k not in (1, 2, 3):
        raise ContractError(f"k is the pipeline number 1, 2 or 3, got {k!r}")
    p = draw_bug_hunt(student)[k - 1]
    if p.kind == "batch":
        return check_lm_batch(fn, seed, loss_shifts=p.options["loss_shifts"])
    if p.kind == "collate":
        return check_pad_eos_collate(fn, seed, side=p.options["side"])
    return check_packed_attention(fn, seed, convention=p.options["convention"])


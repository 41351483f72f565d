"""Smoke tests for the objective: each check names the contract it protects and the fix.

Training can go smoothly while learning the wrong task; these checks look at the tensors that
define the task (labels, masks, positions) instead of at the loss curve.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from labkit.batch import position_ids_from_mask
from labkit.contracts import IGNORE, ContractError  # noqa: F401  (re-exported: older imports keep working)


@dataclass(frozen=True)
class Finding:
    """One problem found by audit(): a stable `code` and a message that explains and names the fix."""

    code: str
    message: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


def _labels_of(batch_or_labels):
    if isinstance(batch_or_labels, torch.Tensor):
        return batch_or_labels
    if isinstance(batch_or_labels, Mapping):
        if "labels" not in batch_or_labels:
            raise ContractError("batch has no 'labels'; fix: the collator must return labels (IGNORE=-100 where nothing is learned)")
        return batch_or_labels["labels"]
    if hasattr(batch_or_labels, "labels"):
        return batch_or_labels.labels
    raise ContractError(f"expected a Batch, a dict with 'labels' or a labels tensor, got {type(batch_or_labels).__name__}")


def assert_has_targets(batch) -> int:
    """Raise when no position is supervised; return the number of target tokens."""
    n = int(_labels_of(batch).ne(IGNORE).sum())
    if n == 0:
        raise ContractError("batch has no supervised target tokens (all labels are -100); the loss would be 0/0 "
                            "and the step learns nothing. Fix: check the completion mask and truncation "
                            "(an answer cut off by max_len leaves only prompt tokens)")
    return n


def assert_prompt_masked(labels, prompt_len: int) -> None:
    """Raise when any of the first prompt_len labels (one sequence, [T]) is a target."""
    labels = _labels_of(labels)
    if labels.dim() != 1:
        raise ContractError(f"assert_prompt_masked checks one sequence: labels must be [T], got {tuple(labels.shape)}; fix: loop over rows")
    bad = labels[:prompt_len].ne(IGNORE).nonzero().flatten().tolist()
    if bad:
        raise ContractError(f"prompt tokens contribute to the completion loss (label positions {bad[:8]} inside the "
                            f"{prompt_len}-token prompt are not -100); the model would learn to imitate the user. "
                            "Fix: set labels[:prompt_len] = -100 (completion_example(..., train_on_prompt=False))")


def assert_masked_targets(input_ids, labels, clean_ids, mask_id: int) -> int:
    """The masked-LM smoke test (one sequence or a batch): positions showing mask_id target their
    clean token, every other position is -100. Returns the number of targets."""
    x, y, clean = (torch.as_tensor(v) for v in (input_ids, labels, clean_ids))
    if not (x.shape == y.shape == clean.shape):
        raise ContractError(f"input_ids, labels and clean ids must have one shape, got {tuple(x.shape)}, {tuple(y.shape)}, {tuple(clean.shape)}")
    masked = x.eq(mask_id)
    if (y[~masked] != IGNORE).any():
        raise ContractError("an unmasked position has a label: the model is graded on tokens it can read (a copy task). "
                            "Fix: labels = -100 wherever the input is not masked")
    if (y[masked] != clean[masked]).any():
        raise ContractError("a masked position's label is not its clean token (is it the [MASK] id, or shifted?). "
                            "Fix: labels[masked] = the original ids")
    if not masked.any():
        raise ContractError("no position is masked: the example has no target")
    return int(masked.sum())


# ----------------------------------------------------------------------------- golden shift check

def trained_targets(loss_fn: Callable, labels, vocab_size: int) -> list[int | None]:
    """Which token id the loss trains each logit position towards (None: not trained).

    Feeds all-zero logits [1,T,V] to loss_fn(logits, labels) and reads its gradient: for
    cross-entropy, d loss / d z[t,k] = (p_k - 1[k = y_t]) / N, so the most negative entry of row t
    is the target of logit t and a zero row means no target.
    """
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(1, -1)
    logits = torch.zeros(1, labels.shape[1], vocab_size, requires_grad=True)
    loss_fn(logits, labels).backward()
    grad = logits.grad[0]
    out: list[int | None] = []
    for row in grad:
        out.append(None if float(row.abs().max()) < 1e-12 else int(row.argmin()))
    return out


def golden_shift_table(record: Sequence[int], builder: Callable, loss_fn: Callable, vocab_size: int) -> list[dict]:
    """Position by position: what logit t has read and what the pipeline trains it to predict.

    builder(record) -> dict(input_ids, labels); loss_fn(logits [1,T,V], labels [1,T]) -> scalar.
    Each row: position t, the tokens read (input_ids[:t+1]), the trained target, the correct
    next token record[t+1], and ok.
    """
    example = builder(list(record))
    inputs = list(example["input_ids"])
    targets = trained_targets(loss_fn, example["labels"], vocab_size)
    rows = []
    for t, target in enumerate(targets):
        expected = record[t + 1] if t + 1 < len(record) else None
        prefix_ok = list(record[: t + 1]) == inputs[: t + 1]
        rows.append({"t": t, "reads": inputs[: t + 1], "trained_target": target, "next_token": expected,
                     "ok": target is None or (prefix_ok and target == expected)})
    return rows


def assert_golden_shift(record: Sequence[int], builder: Callable, loss_fn: Callable, vocab_size: int) -> list[dict]:
    """The AR smoke test: logit t (having read record[:t+1]) must be trained on record[t+1].

    Raises a ContractError naming the offset that was learned instead (t+2 = double shift,
    t = no shift: the model copies its input).
    """
    rows = golden_shift_table(record, builder, loss_fn, vocab_size)
    trained = [r for r in rows if r["trained_target"] is not None]
    if not trained:
        raise ContractError("no logit position is trained (all labels are -100)")
    bad = [r for r in trained if not r["ok"]]
    if bad:
        r = bad[0]
        offsets = [k for k in range(len(record)) if record[k] == r["trained_target"]]
        if r["t"] + 2 in offsets:
            what = "t+2: the labels were shifted twice (double_shift). Fix: shift in the dataset OR in the loss, not both"
        elif r["t"] in offsets:
            what = "t: nothing was shifted, the model learns to copy its input. Fix: shift once (causal_lm_loss(shift=True) on unshifted labels)"
        else:
            what = "an unexpected token. Fix: check how labels are built and aligned"
        raise ContractError(f"golden shift check failed at logit {r['t']}: trained on {r['trained_target']} but the next token "
                            f"is {r['next_token']}; the pipeline predicts {what}")
    return rows


# ----------------------------------------------------------------------------- audit

def audit(batch, *, loss_shifts: bool = True, pad_id: int | None = None, eos_id: int | None = None,
          prompt_lengths: Sequence[int] | None = None) -> list[Finding]:
    """Inspect a batch for the classic objective bugs; a correct batch yields [].

    batch: a labkit Batch or a dict of tensors (input_ids, labels, optional attention_mask,
    position_ids). loss_shifts: whether the loss compares logit t with label t+1 (transformers'
    causal-LM convention). prompt_lengths: per row, the number of prompt tokens (counted from the
    row's first real token) that must not be targets.
    Codes: no_targets, double_shift, no_shift, unmasked_prompt, arange_positions_with_left_padding,
    cross_document_attention, eos_label_masked, supervised_padding.
    """


    get = (lambda k: batch.get(k)) if isinstance(batch, Mapping) else (lambda k: getattr(batch, k, None))
    input_ids, labels = get("input_ids"), get("labels")
    if input_ids is None or labels is None:
        raise ContractError("audit() needs input_ids and labels")
    if input_ids.dim() != 2 or labels.shape != input_ids.shape:
        raise ContractError(f"audit() needs input_ids and labels of the same [B,T] shape, got {tuple(input_ids.shape)} and {tuple(labels.shape)}")
    B, T = input_ids.shape
    attn = get("attention_mask")
    positions = get("position_ids")
    doc_ids = get("document_ids")
    real = torch.ones(B, T, dtype=torch.bool) if attn is None else (attn.bool() if attn.dim() == 2 else attn.bool().diagonal(dim1=1, dim2=2))
    supervised = labels.ne(IGNORE)
    findings: list[Finding] = []

    if not supervised.any():
        findings.append(Finding("no_targets", "no position is supervised (all labels are -100): the loss is 0/0 and nothing is learned. "
                                "Fix: check the completion mask and truncation"))
    # Shift: compare labels with the same and the next input token on supervised real positions.
    if T > 1 and supervised[:, :-1].any():
        sup = supervised[:, :-1] & real[:, :-1] & real[:, 1:]
        if sup.any():
            same = labels[:, :-1].eq(input_ids[:, :-1])[sup].float().mean().item()
            nxt = labels[:, :-1].eq(input_ids[:, 1:])[sup].float().mean().item()
            if loss_shifts and nxt > 0.9 and same < 0.5:
                findings.append(Finding("double_shift", f"labels are already shifted ({nxt:.0%} of labels equal the next input token) "
                                        "while the loss shifts again: logit t is trained on token t+2. Fix: give the loss "
                                        "unshifted labels (labels = input_ids) or call it with shift=False"))
            if not loss_shifts and same > 0.9 and nxt < 0.5:
                findings.append(Finding("no_shift", f"labels equal the input tokens ({same:.0%}) and the loss does not shift: the "
                                        "model learns to copy its input. Fix: shift once (external labels or shift=True)"))
    # Padding that is supervised.
    pads = ~real
    if pad_id is not None and attn is None:
        pads = input_ids.eq(pad_id)
    n_sup_pad = int((supervised & pads).sum())
    if n_sup_pad:
        findings.append(Finding("supervised_padding", f"{n_sup_pad} padding positions have a label: the model is trained to "
                                "predict padding and the denominator counts it. Fix: set labels to -100 where attention_mask is 0"))
    elif loss_shifts and T > 1:
        # With the loss's shift, label t+1 is predicted by the logit at t: a padding logit (left padding).
        from_pad = int((supervised[:, 1:] & pads[:, :-1]).sum())
        if from_pad:
            findings.append(Finding("supervised_padding", f"{from_pad} targets are predicted from a padding position: with left "
                                    "padding and a shifting loss, the logit of the last pad is trained on the first real token. "
                                    "Fix: pad on the right for training, or set the first real token's label to -100"))
    # Left padding with column-index positions.
    if attn is not None and attn.dim() == 2 and positions is not None:
        mask = attn.long()
        left_padded = mask[:, 0].eq(0) & mask.sum(-1).gt(0)
        if left_padded.any():
            expected = position_ids_from_mask(mask)
            wrong = (positions.ne(expected) & mask.bool())[left_padded].any(-1)
            if wrong.any():
                findings.append(Finding("arange_positions_with_left_padding", f"{int(wrong.sum())} left-padded rows have positions "
                                        "counted from column 0 (arange), so the same prompt gets other positions than when "
                                        "decoded alone. Fix: position_ids = attention_mask.cumsum(-1) - 1 (position_ids_from_mask)"))
    # Several documents in one row that can read each other.
    if positions is not None:
        restarts = positions[:, 1:].eq(0) & real[:, 1:] & real[:, :-1]
        if doc_ids is not None:
            restarts = restarts | (doc_ids[:, 1:].ne(doc_ids[:, :-1]) & real[:, 1:] & real[:, :-1])
        if restarts.any():
            rows = restarts.any(-1).nonzero().flatten().tolist()
            leak = False
            if attn is None or attn.dim() == 2:
                leak = True
            else:
                seg = (torch.cat([torch.zeros(B, 1, dtype=torch.long), restarts.long()], 1).cumsum(-1)
                       if doc_ids is None else doc_ids)
                cross = seg[:, :, None].ne(seg[:, None, :]) & real[:, :, None] & real[:, None, :]
                leak = bool((attn.bool() & cross).any())
            if leak:
                findings.append(Finding("cross_document_attention", f"rows {rows[:5]} hold several documents (positions restart) "
                                        "and tokens can attend to earlier documents. Fix: pack(..., block_diagonal=True) or "
                                        "pass the document boundaries (cu_seq_lens / position_ids) to a kernel that uses them"))
    # pad == eos hides the EOS targets.
    if eos_id is not None:
        after_target = supervised.long().cumsum(-1).gt(0)
        hidden = input_ids.eq(eos_id) & real & ~supervised & after_target
        if hidden.any():
            why = " (pad_id == eos_id: a collator that masks every pad token also masked every EOS)" if pad_id == eos_id else ""
            findings.append(Finding("eos_label_masked", f"{int(hidden.sum())} real EOS tokens that end a supervised span have label -100"
                                    f"{why}; the model never learns to stop. Fix: use a pad token distinct from EOS, or mask "
                                    "padding by attention_mask instead of by token id"))
    # Prompt tokens that are targets.
    if prompt_lengths is not None:
        if len(prompt_lengths) != B:
            raise ContractError(f"prompt_lengths has {len(prompt_lengths)} entries for {B} rows")
        bad_rows = []
        for b, n in enumerate(prompt_lengths):
            cols = real[b].nonzero().flatten()
            start = int(cols[0]) if len(cols) else 0
            if supervised[b, start:start + int(n)].any():
                bad_rows.append(b)
        if bad_rows:
            findings.append(Finding("unmasked_prompt", f"rows {bad_rows[:5]} have supervised prompt tokens: the model learns to "
                                    "write the user's text. Fix: labels = -100 on the prompt (completion_example)"))
    return findings

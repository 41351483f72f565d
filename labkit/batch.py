"""The batch contract: which tokens are read, where they sit, and which are targets.

A `Batch` carries every tensor that defines the empirical objective:

    loss = sum_{b,t} m[b,t] * w[b,t] * l(c[b,t], y[b,t]) / denominator

input_ids (what the model reads), attention_mask (which tokens may be read, [B,T] or [B,T,T]),
position_ids (where each token sits), labels (targets, IGNORE = -100 where nothing is learned),
loss_mask (the auditable view of supervised positions) and weights (per sequence or per token).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Iterable, Mapping, Sequence

import torch

from labkit.contracts import IGNORE, ContractError, count, finite
from labkit.viz import contract_html

# keys an example dict may carry: what collate/pack read, plus metadata they pass over
EXAMPLE_KEYS = ("input_ids", "labels", "weight", "attention_mask", "prompt_len")
# keys the collator computes itself: an example that brings its own would have them dropped
COMPUTED_KEYS = ("position_ids", "loss_mask")

PAD_SIDES = ("right", "left")
POSITION_POLICIES = ("mask", "arange")


@dataclass
class Batch:
    """Tensors of one batch; every field is [B, T] except attention_mask ([B,T] or [B,T,T]).

    `document_ids` (optional, [B,T], -1 on padding) records which packed document each token
    belongs to. Construct with keywords; `.to(device)` moves every tensor.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    loss_mask: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    document_ids: torch.Tensor | None = None

    def __post_init__(self):
        ids = self.input_ids
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise ContractError(f"Batch.input_ids must be a [B, T] tensor, got {_shape(ids)}; fix: collate examples with labkit.batch.collate")
        B, T = ids.shape
        for name in ("position_ids", "labels", "loss_mask", "document_ids"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (B, T):
                raise ContractError(f"Batch.{name} has shape {_shape(value)} but input_ids is {(B, T)}; fix: build every field from the same padded examples")
        mask = self.attention_mask
        if tuple(mask.shape) not in ((B, T), (B, T, T)):
            raise ContractError(f"Batch.attention_mask must be [B,T] or [B,T,T] = {(B, T)} or {(B, T, T)}, got {_shape(mask)}")
        if self.weights is not None and tuple(self.weights.shape) not in ((B,), (B, T)):
            raise ContractError(f"Batch.weights must be per sequence [B]={B} or per token [B,T]={(B, T)}, got {_shape(self.weights)}")
        for name in ("input_ids", "labels", "position_ids"):
            if getattr(self, name).dtype != torch.long:
                raise ContractError(f"Batch.{name} must be int64 (torch.long), got {getattr(self, name).dtype}; fix: build it with dtype=torch.long")

    def to(self, device) -> "Batch":
        moved = {f.name: (v.to(device) if isinstance(v, torch.Tensor) else v)
                 for f in fields(self) for v in [getattr(self, f.name)]}
        return Batch(**moved)

    def model_inputs(self) -> dict:
        """The tensors a model's forward reads (labels are for the loss)."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}

    @property
    def supervised(self) -> torch.Tensor:
        """Bool [B,T]: positions whose label is a target."""
        return self.labels.ne(IGNORE)

    def n_targets(self) -> int:
        return int(self.supervised.sum())

    def _repr_html_(self) -> str:

        return contract_html(self)


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def _as_list(seq, what: str) -> list[int]:
    if isinstance(seq, torch.Tensor):
        if seq.dim() != 1:
            raise ContractError(f"{what} must be a 1-D sequence of ids, got shape {tuple(seq.shape)}")
        if seq.is_floating_point() or seq.dtype == torch.bool:
            raise ContractError(f"{what} must hold integer token ids, got dtype {seq.dtype} (float ids would be "
                                "truncated: 1.7 -> 1); fix: build it with dtype=torch.long")
        return seq.tolist()
    if isinstance(seq, (str, bytes)) or not isinstance(seq, Iterable):
        raise ContractError(f"{what} must be a list of token ids, got {type(seq).__name__}; fix: encode text with the tokenizer first")
    out = list(seq)
    bad = [v for v in out if isinstance(v, bool) or not (isinstance(v, int) or hasattr(v, "__index__"))]
    if bad:
        raise ContractError(f"{what} must hold integer token ids, got {bad[0]!r} ({type(bad[0]).__name__}); fix: "
                            "encode text with the tokenizer, and never round float ids (1.7 would become 1)")
    return [int(v) for v in out]


def _check_example_keys(ex: Mapping, i: int) -> None:
    """Refuse keys that would be silently dropped: a misspelt 'labels' (the prompt would then be
    trained), fields the collator computes itself, and an own attention_mask with padding in it."""
    for key in ex:
        if key in EXAMPLE_KEYS:
            continue
        if key in COMPUTED_KEYS:
            raise ContractError(f"example {i} carries {key!r}, which the collator computes itself (it would be dropped); "
                                f"fix: remove {key!r} from the example (positions: collate(positions=...) or pack())")
        near = difflib.get_close_matches(str(key), EXAMPLE_KEYS, n=1, cutoff=0.6)
        if near and near[0] not in ex:
            raise ContractError(f"example {i} has the key {key!r}, which nothing reads; did you mean {near[0]!r}? Without "
                                f"it, {'labels default to a copy of input_ids and every token (prompt included) is trained' if near[0] == 'labels' else near[0] + ' takes its default'}; "
                                f"fix: rename {key!r} to {near[0]!r}")
    if "attention_mask" in ex:
        mask = _as_list(ex["attention_mask"], f"example {i} attention_mask")
        if len(mask) != len(_as_list(ex["input_ids"], f"example {i} input_ids")) or any(m != 1 for m in mask):
            raise ContractError(f"example {i} carries its own attention_mask with padding or a different length; the "
                                "collator builds the mask from the lengths, so those pads would be read and trained; fix: "
                                "pass the unpadded tokens only (drop the padding and the attention_mask)")


def _example_ids_labels(ex, i: int) -> tuple[list[int], list[int]]:
    """Example i (a dict with input_ids and optional labels) -> (ids, labels); labels default to
    a copy of input_ids (the loss shifts) and must align with them position by position."""
    if not isinstance(ex, Mapping) or "input_ids" not in ex:
        near = difflib.get_close_matches("input_ids", [str(k) for k in ex], n=1, cutoff=0.6) if isinstance(ex, Mapping) else []
        hint = f" (is {near[0]!r} a misspelling?)" if near else ""
        raise ContractError(f"example {i} has no 'input_ids'{hint}; fix: examples are dicts like "
                            "{'input_ids': [...], 'labels': [...]}")
    _check_example_keys(ex, i)
    ids = _as_list(ex["input_ids"], f"example {i} input_ids")
    labels = _as_list(ex["labels"], f"example {i} labels") if ex.get("labels") is not None else list(ids)
    if len(labels) != len(ids):
        raise ContractError(f"example {i}: {len(labels)} labels for {len(ids)} input ids; fix: labels align with "
                            "input_ids position by position (the loss does the shift)")
    return ids, labels


def pad(seqs: Sequence, pad_value: int | None, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad variable-length id lists to [B, T] (T = longest); return (ids, attention_mask).

    attention_mask[b,t] = 1 on real tokens, 0 on padding. `side="left"` right-aligns every row,
    so the last real token of each row sits in column T-1 (what batched decoding wants).
    """
    if pad_value is None:
        raise ContractError("pad id missing: pad() needs pad_value; fix: pass tokenizer.pad_id (or IGNORE=-100 when padding labels)")
    if side not in PAD_SIDES:
        raise ContractError(f"unknown padding side {side!r}; fix: use 'right' or 'left'")
    rows = [_as_list(s, f"sequence {i}") for i, s in enumerate(seqs)]
    if not rows:
        raise ContractError("pad() got no sequences; fix: pass a non-empty list")
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), int(pad_value), dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r)
        cols = slice(0, n) if side == "right" else slice(T - n, T)
        ids[b, cols] = torch.tensor(r, dtype=torch.long)
        mask[b, cols] = 1
    return ids, mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Compact positions of real tokens: cumsum(mask) - 1, and 0 on padding. [B,T] -> [B,T].

    The same rule transformers' generate() uses, so a left-padded row gets 0,1,2,... from its
    first real token instead of from column 0.
    """
    if attention_mask.dim() != 2:
        raise ContractError(f"position_ids_from_mask needs a [B,T] padding mask, got {_shape(attention_mask)}; fix: for packed rows use pack(), which restarts positions per document")
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).clamp_min(0).masked_fill(mask == 0, 0)


def arange_positions(input_ids: torch.Tensor) -> torch.Tensor:
    """Column index as position, [B,T]: what a model assumes when given no position_ids."""
    B, T = input_ids.shape
    return torch.arange(T, device=input_ids.device).expand(B, T).clone()


def collate(examples: Sequence[Mapping], pad_id: int | None, side: str = "right",
            positions: str = "mask") -> Batch:
    """Pad a list of examples into a Batch.

    Each example is a dict with `input_ids` and optional `labels` (same length; default: a copy of
    input_ids, the internal-shift convention where the loss shifts) and optional `weight` (float).
    Padding gets label IGNORE and attention 0. positions: "mask" (compact, from the attention mask)
    or "arange" (column index; wrong for left padding).
    """
    if positions not in POSITION_POLICIES:
        raise ContractError(f"unknown positions policy {positions!r}; fix: use 'mask' or 'arange'")
    if not examples:
        raise ContractError("collate() got no examples; fix: pass a non-empty list of dicts with 'input_ids'")
    ids_list, label_list, weights = [], [], []
    for i, ex in enumerate(examples):
        ids, labels = _example_ids_labels(ex, i)
        ids_list.append(ids)
        label_list.append(labels)
        weights.append(finite(ex.get("weight", 1.0), f"example {i} weight", low=0.0))
    input_ids, attention_mask = pad(ids_list, pad_id, side)
    labels, _ = pad(label_list, IGNORE, side)
    pos = position_ids_from_mask(attention_mask) if positions == "mask" else arange_positions(input_ids)
    has_weights = any("weight" in ex for ex in examples)
    if has_weights and sum(weights) == 0:
        raise ContractError("every example has weight 0: the weighted mean would be 0/0; fix: give the examples that "
                            "should count a positive weight")
    return Batch(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, labels=labels,
                 loss_mask=labels.ne(IGNORE).long(),
                 weights=torch.tensor(weights) if has_weights else None)


def pack(examples: Sequence[Mapping], max_len: int, block_diagonal: bool = True, pad_id: int = 0) -> Batch:
    """Pack documents into rows of at most max_len tokens (first fit, in order).

    Positions restart at 0 in each document. The first label of each document is IGNORE, so after
    the loss's shift no token predicts across a boundary (the rule of transformers'
    DataCollatorWithFlattening). block_diagonal=True returns a bool [B,T,T] attention mask
    (True = may attend): causal inside a document, closed across documents; padding attends only
    to itself. block_diagonal=False returns the plain [B,T] padding mask: documents in a row can
    read each other.
    """
    max_len = count(max_len, "max_len")
    docs, doc_weights = [], []
    for i, ex in enumerate(examples):
        ids, labels = _example_ids_labels(ex, i)
        if not ids:
            raise ContractError(f"example {i} is empty; fix: drop empty documents before packing")
        if len(ids) > max_len:
            raise ContractError(f"example {i} has {len(ids)} tokens > max_len={max_len}; fix: truncate or split documents first, or raise max_len")
        docs.append((ids, [IGNORE] + labels[1:]))
        doc_weights.append(finite(ex.get("weight", 1.0), f"example {i} weight", low=0.0))
    if not docs:
        raise ContractError("pack() got no examples")
    rows: list[list[tuple[list[int], list[int]]]] = []
    for doc in docs:
        if rows and sum(len(d[0]) for d in rows[-1]) + len(doc[0]) <= max_len:
            rows[-1].append(doc)
        else:
            rows.append([doc])
    T = max(sum(len(d[0]) for d in row) for row in rows)
    B = len(rows)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((B, T), dtype=torch.long)
    document_ids = torch.full((B, T), -1, dtype=torch.long)
    doc_index = 0
    for b, row in enumerate(rows):
        start = 0
        for ids, labs in row:
            n = len(ids)
            input_ids[b, start:start + n] = torch.tensor(ids)
            labels[b, start:start + n] = torch.tensor(labs)
            position_ids[b, start:start + n] = torch.arange(n)
            document_ids[b, start:start + n] = doc_index
            doc_index += 1
            start += n
    padding = document_ids.eq(-1)
    if block_diagonal:
        same_doc = document_ids[:, :, None].eq(document_ids[:, None, :]) & ~padding[:, :, None]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        attention_mask = (same_doc & causal) | torch.eye(T, dtype=torch.bool)
    else:
        attention_mask = (~padding).long()
    weights = None
    if any("weight" in ex for ex in examples):   # per-example weights become per-token weights [B,T]
        if sum(doc_weights) == 0:
            raise ContractError("every example has weight 0: the weighted mean would be 0/0")
        table = torch.tensor([0.0] + doc_weights)
        weights = table[document_ids + 1]
    return Batch(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                 labels=labels, loss_mask=labels.ne(IGNORE).long(), weights=weights, document_ids=document_ids)


def unpack(batch: Batch) -> list[dict]:
    """Inverse of pack(): the documents, in order, as dicts of input_ids and labels (lists)."""
    if batch.document_ids is None:
        raise ContractError("unpack() needs a packed Batch (document_ids is None); fix: build it with pack()")
    docs: dict[int, dict] = {}
    for b in range(batch.input_ids.shape[0]):
        for t in range(batch.input_ids.shape[1]):
            d = int(batch.document_ids[b, t])
            if d < 0:
                continue
            doc = docs.setdefault(d, {"input_ids": [], "labels": []})
            doc["input_ids"].append(int(batch.input_ids[b, t]))
            doc["labels"].append(int(batch.labels[b, t]))
    return [docs[d] for d in sorted(docs)]

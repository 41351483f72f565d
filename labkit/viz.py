"""The contract table and the lab's figures (pure functions: data in, HTML string or Figure out)."""
from __future__ import annotations

import html as _html
from typing import Mapping

import torch

from labkit import IGNORE

COLORS = {"supervised": "#c8ecc4", "ignored": "#e6e6e6", "pad": "#f7f7f7", "plain": "#ffffff", "bad": "#f6c1c1"}


def _field(batch, name):
    value = batch.get(name) if isinstance(batch, Mapping) else getattr(batch, name, None)
    if value is None:
        return None
    t = torch.as_tensor(value)
    return t if t.dim() >= 2 else t[None]


def contract_rows(batch, row: int = 0, tokenizer=None, loss_shifts: bool = True, targets=None) -> list[dict]:
    """The rows of the contract table for one sequence of a batch.

    Each row: {"name", "cells": [str], "kinds": [supervised|ignored|pad|plain]}. Rows: token,
    input_ids, attention_mask (or 'doc' for packed rows), position_ids, labels, loss_mask and
    "logit t trains on" (labels[t+1] when the loss shifts, labels[t] otherwise; or `targets`, a
    list with one target id or None per position, e.g. measured by checks.trained_targets).
    """
    ids = _field(batch, "input_ids")[row]
    T = ids.shape[0]
    labels = _field(batch, "labels")
    labels = labels[row] if labels is not None else torch.full((T,), IGNORE)
    attn = _field(batch, "attention_mask")
    if attn is not None and attn.dim() == 3:
        real = attn[row].bool().diagonal()
        attn_row = None
    else:
        real = attn[row].bool() if attn is not None else torch.ones(T, dtype=torch.bool)
        attn_row = attn[row] if attn is not None else None
    pos = _field(batch, "position_ids")
    docs = _field(batch, "document_ids")
    loss_mask = _field(batch, "loss_mask")
    name = (lambda i: tokenizer.token(int(i))) if tokenizer is not None else (lambda i: "·" if int(i) == IGNORE else str(int(i)))
    base = ["plain" if r else "pad" for r in real.tolist()]
    sup = ["supervised" if int(y) != IGNORE else ("ignored" if r else "pad") for y, r in zip(labels.tolist(), real.tolist())]
    rows = [{"name": "token", "cells": [name(i) for i in ids.tolist()], "kinds": base},
            {"name": "input_ids", "cells": [str(i) for i in ids.tolist()], "kinds": base}]
    if attn_row is not None:
        rows.append({"name": "attention_mask", "cells": [str(int(a)) for a in attn_row.tolist()], "kinds": base})
    if docs is not None:
        rows.append({"name": "document", "cells": [str(int(d)) if int(d) >= 0 else "·" for d in docs[row].tolist()], "kinds": base})
    if pos is not None:
        rows.append({"name": "position_ids", "cells": [str(int(p)) for p in pos[row].tolist()], "kinds": base})
    rows.append({"name": "labels", "cells": [str(int(y)) if int(y) != IGNORE else "-100" for y in labels.tolist()], "kinds": sup})
    if loss_mask is not None:
        rows.append({"name": "loss_mask", "cells": [str(int(m)) for m in loss_mask[row].tolist()], "kinds": sup})
    if targets is None:
        shifted = torch.cat([labels[1:], torch.tensor([IGNORE])]) if loss_shifts else labels
        targets = [None if int(y) == IGNORE else int(y) for y in shifted.tolist()]
    kinds = ["supervised" if t is not None else ("ignored" if r else "pad") for t, r in zip(targets, real.tolist())]
    rows.append({"name": "logit t trains on", "cells": ["·" if t is None else name(t) for t in targets], "kinds": kinds})
    return rows


def contract_html(batch, row: int = 0, tokenizer=None, loss_shifts: bool = True, targets=None, title: str | None = None) -> str:
    """The contract table as an HTML string: tokens in columns, green = supervised, grey = ignored."""
    rows = contract_rows(batch, row, tokenizer, loss_shifts, targets)
    T = len(rows[0]["cells"])
    cell = "padding:2px 6px;border:1px solid #ccc;text-align:center;font-family:monospace;font-size:12px"
    out = ['<table style="border-collapse:collapse;margin:4px 0">']
    if title:
        out.append(f'<caption style="text-align:left;font-weight:bold">{_html.escape(title)}</caption>')
    out.append("<tr><th style='" + cell + "'>t</th>" + "".join(f"<th style='{cell}'>{t}</th>" for t in range(T)) + "</tr>")
    for r in rows:
        tds = "".join(f"<td style='{cell};background:{COLORS[k]}'>{_html.escape(c)}</td>" for c, k in zip(r["cells"], r["kinds"]))
        out.append(f"<tr><th style='{cell};text-align:right'>{_html.escape(r['name'])}</th>{tds}</tr>")
    out.append("</table>")
    return "".join(out)


def contract_text(batch, row: int = 0, tokenizer=None, loss_shifts: bool = True, targets=None) -> str:
    """The contract table as aligned plain text (for print, logs and saved notebooks)."""
    rows = contract_rows(batch, row, tokenizer, loss_shifts, targets)
    width = max(len(c) for r in rows for c in r["cells"]) + 1
    head = max(len(r["name"]) for r in rows)
    lines = []
    for r in rows:
        lines.append(r["name"].rjust(head) + " |" + "".join(c.rjust(width) for c in r["cells"]))
    return "\n".join(lines)


def contract_figure(batch, row: int = 0, tokenizer=None, loss_shifts: bool = True, targets=None, title: str | None = None):
    """The contract table as a matplotlib Figure (coloured grid with the values written in)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgb

    rows = contract_rows(batch, row, tokenizer, loss_shifts, targets)
    T, R = len(rows[0]["cells"]), len(rows)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.62 * T + 1.8), 0.36 * R + 0.7))
    grid = [[to_rgb(COLORS[k]) for k in r["kinds"]] for r in rows]
    ax.imshow(grid, aspect="auto")
    for i, r in enumerate(rows):
        for t, c in enumerate(r["cells"]):
            ax.text(t, i, c, ha="center", va="center", fontsize=8, family="monospace")
    ax.set_yticks(range(R), [r["name"] for r in rows], fontsize=8)
    ax.set_xticks(range(T), [str(t) for t in range(T)], fontsize=8)
    ax.set_xticks([x - 0.5 for x in range(1, T)], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, R)], minor=True)
    ax.grid(which="minor", color="#bbbbbb", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def loss_curves(histories: Mapping[str, object], title: str = "training loss", floor: float | None = None,
                floor_label: str = "entropy floor"):
    """Loss-per-step curves for several runs (History objects or lists of floats)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, h in histories.items():
        losses = getattr(h, "loss", h)
        ax.plot(range(len(losses)), losses, label=name, linewidth=1.2)
    if floor is not None:
        ax.axhline(floor, color="k", linestyle="--", linewidth=1, label=floor_label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_bars(groups: Mapping[str, Mapping[str, float]], title: str = "", ylabel: str = "accuracy"):
    """Grouped bars: {run: {metric: value}} -> Figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    runs = list(groups)
    metrics = list(next(iter(groups.values())))
    x = np.arange(len(metrics))
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, run in enumerate(runs):
        ax.bar(x + i * width - 0.4 + width / 2, [groups[run][m] for m in metrics], width, label=run)
    ax.set_xticks(x, metrics, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

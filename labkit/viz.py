"""The contract table and the lab's figures (pure functions: data in, HTML string or Figure out)."""
from __future__ import annotations

import html as _html
from typing import Mapping

import torch

from labkit.contracts import IGNORE

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
    return token_rows_html(contract_rows(batch, row, tokenizer, loss_shifts, targets), title)


def contract_text(batch, row: int = 0, tokenizer=None, loss_shifts: bool = True, targets=None) -> str:
    """The contract table as aligned plain text (for print, logs and saved notebooks)."""
    return token_rows_text(contract_rows(batch, row, tokenizer, loss_shifts, targets))


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


# Bar colours for probability panels: the matched key / true class, same-meaning keys, the rest.
BAR_COLORS = {"positive": "#4caf50", "false_negative": "#ff9800", "negative": "#9e9e9e", "hard": "#e57373", "plain": "#5c85d6"}


def prob_bars_html(names, probs, kinds=None, title: str | None = None, width_px: int = 240) -> str:
    """Horizontal probability bars as an HTML table (no matplotlib, renders in well under 100 ms).

    names [n] strings, probs [n] floats in [0, 1], kinds [n] keys of BAR_COLORS (default 'plain')."""
    probs = [float(p) for p in probs]
    kinds = list(kinds) if kinds is not None else ["plain"] * len(probs)
    cell = "padding:1px 6px;font-family:monospace;font-size:12px"
    out = ['<table style="border-collapse:collapse;margin:4px 0">']
    if title:
        out.append(f'<caption style="text-align:left;font-weight:bold">{_html.escape(title)}</caption>')
    for name, p, kind in zip(names, probs, kinds):
        bar = f"<div style='width:{max(1, round(p * width_px))}px;height:10px;background:{BAR_COLORS.get(kind, BAR_COLORS['plain'])}'></div>"
        out.append(f"<tr><td style='{cell};text-align:right'>{_html.escape(str(name))}</td><td style='{cell}'>{bar}</td>"
                   f"<td style='{cell}'>{p:.3f}</td></tr>")
    out.append("</table>")
    return "".join(out)


def token_weights_figure(weights: Mapping[str, "torch.Tensor"], title: str = "each token's weight in the loss"):
    """One heat map per reduction: {name: [B,T] effective token weights} (labkit.reduce.effective_weights).
    Rows are sequences, columns positions; blank cells are not targets. Each panel has its own scale."""
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(weights)
    fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names) + 0.6, 2.3), squeeze=False)
    for ax, name in zip(axes[0], names):
        w = torch.as_tensor(weights[name]).double().cpu().numpy()
        shown = np.where(w > 0, w, np.nan)
        ax.imshow(shown, cmap="Greens", vmin=0, vmax=1.6 * np.nanmax(shown) if np.isfinite(shown).any() else 1, aspect="auto")
        for (b, t), v in np.ndenumerate(w):
            if v > 0:
                ax.text(t, b, f"{v:.2f}".lstrip("0"), ha="center", va="center", fontsize=6)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks(range(w.shape[0]), [f"row {b}" for b in range(w.shape[0])], fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def length_histogram(groups: Mapping[str, list], max_len: int, title: str = "generated lengths", xlabel: str = "new tokens"):
    """Overlaid histograms of integer lengths 1..max_len, one per group ({name: [lengths]})."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    bins = [x + 0.5 for x in range(max_len + 1)]
    for name, lengths in groups.items():
        ax.hist(list(lengths), bins=bins, alpha=0.6, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- signed bars, calibration (notebooks 01, 02)

def svg_bars(values, names=None, highlight=None, width: int = 360, height: int = 110, title: str | None = None,
             pos_color: str = "#5c85d6", neg_color: str = "#e57373", hi_color: str = "#2e7d32") -> str:
    """Signed bar chart as an inline SVG string (no matplotlib; a few ms even for thousands of bars).

    values [n] floats (may be negative, drawn below a zero line); names: labels under the bars when
    n <= 24; highlight: index of the bar drawn in hi_color (e.g. the target class)."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        raise ValueError("svg_bars needs at least one value")
    top, bottom = max(0.0, max(vals)), min(0.0, min(vals))
    span = (top - bottom) or 1.0
    label_h = 14 if names is not None and n <= 24 else 0
    title_h = 14 if title else 0
    plot_h = height - label_h - title_h
    zero_y = title_h + plot_h * top / span
    step = width / n
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" style="background:#fff">']
    if title:
        parts.append(f'<text x="2" y="11" font-size="11" font-family="sans-serif">{_html.escape(title)}</text>')
    if n <= 200:
        for i, v in enumerate(vals):
            h = plot_h * abs(v) / span
            y = zero_y - h if v >= 0 else zero_y
            color = hi_color if i == highlight else (pos_color if v >= 0 else neg_color)
            parts.append(f'<rect x="{i * step + step * 0.1:.2f}" y="{y:.2f}" width="{max(step * 0.8, 0.5):.2f}" '
                         f'height="{max(h, 0.0):.2f}" fill="{color}"/>')
            if label_h:
                parts.append(f'<text x="{(i + 0.5) * step:.1f}" y="{height - 3}" font-size="10" text-anchor="middle" '
                             f'font-family="monospace">{_html.escape(str(names[i]))}</text>')
    else:   # one path per sign: thin vertical strokes
        for sign, color in ((1, pos_color), (-1, neg_color)):
            d = "".join(f"M{(i + 0.5) * step:.1f} {zero_y:.1f}V{zero_y - plot_h * v / span:.1f}"
                        for i, v in enumerate(vals)
                        if (v > 0 if sign > 0 else v < 0) and i != highlight and plot_h * abs(v) / span >= 0.25)
            if d:
                parts.append(f'<path d="{d}" stroke="{color}" stroke-width="{max(step, 0.6):.2f}" fill="none"/>')
        if highlight is not None:
            v = vals[highlight]
            parts.append(f'<path d="M{(highlight + 0.5) * step:.2f} {zero_y:.1f}V{zero_y - plot_h * v / span:.1f}" '
                         f'stroke="{hi_color}" stroke-width="3" fill="none"/>')
    parts.append(f'<line x1="0" x2="{width}" y1="{zero_y:.1f}" y2="{zero_y:.1f}" stroke="#333" stroke-width="0.6"/>')
    parts.append("</svg>")
    return "".join(parts)


def reliability_figure(tables: Mapping[str, Mapping], title: str = "reliability diagram"):
    """Reliability diagrams side by side: {run: supervised.reliability(...) output} -> Figure.
    Bars: accuracy per confidence bin; the diagonal is perfect calibration."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(3.2 * len(tables), 3.0), squeeze=False)
    for ax, (name, t) in zip(axes[0], tables.items()):
        edges = t["edges"].tolist()
        width = edges[1] - edges[0]
        centers = [e + width / 2 for e in edges[:-1]]
        acc = [0.0 if a != a else a for a in t["accuracy"].tolist()]
        conf = [c if c == c else m for c, m in zip(t["confidence"].tolist(), centers)]
        ax.bar(centers, acc, width=width * 0.9, color="#5c85d6", label="accuracy")
        ax.bar(centers, [c - a for c, a in zip(conf, acc)], bottom=acc, width=width * 0.9, color="#f6c1c1",
               edgecolor="#e57373", label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (max p)")
        ax.set_title(f"{name}: ECE {t['ece']:.3f}", fontsize=9)
    axes[0][0].set_ylabel("accuracy vs the true label law")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def svg_curve(xs, ys, marker: int | None = None, width: int = 300, height: int = 110, ymin: float = 0.0,
              ymax: float = 1.0, title: str | None = None, color: str = "#5c85d6") -> str:
    """A line plot as an inline SVG string (no matplotlib): ys over xs, y axis [ymin, ymax];
    marker = index of the point drawn as a dot (e.g. the current step)."""
    xs, ys = [float(x) for x in xs], [float(y) for y in ys]
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("svg_curve needs xs and ys of one length >= 2")
    title_h = 14 if title else 0
    pad = 4
    x0, x1 = min(xs), max(xs)
    sx = lambda x: pad + (width - 2 * pad) * (x - x0) / ((x1 - x0) or 1.0)  # noqa: E731
    sy = lambda y: title_h + pad + (height - title_h - 2 * pad) * (ymax - y) / ((ymax - ymin) or 1.0)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" style="background:#fff">']
    if title:
        parts.append(f'<text x="2" y="11" font-size="11" font-family="sans-serif">{_html.escape(title)}</text>')
    for level in (ymin, ymax):
        parts.append(f'<line x1="{pad}" x2="{width - pad}" y1="{sy(level):.1f}" y2="{sy(level):.1f}" stroke="#ccc" stroke-width="0.6"/>')
    points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
    parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="1.6"/>')
    if marker is not None:
        parts.append(f'<circle cx="{sx(xs[marker]):.1f}" cy="{sy(ys[marker]):.1f}" r="3.5" fill="#e57373"/>')
    parts.append("</svg>")
    return "".join(parts)


def token_rows_html(rows: list[dict], title: str | None = None) -> str:
    """A small coloured table: rows of {"name", "cells": [str], "kinds": [key of COLORS]} (the same
    row format as contract_rows), columns = positions."""
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


def token_rows_text(rows: list[dict]) -> str:
    """The same rows as aligned plain text."""
    width = max(len(c) for r in rows for c in r["cells"]) + 1
    head = max(len(r["name"]) for r in rows)
    return "\n".join(r["name"].rjust(head) + " |" + "".join(c.rjust(width) for c in r["cells"]) for r in rows)

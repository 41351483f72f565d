"""ipywidgets panels: each is a thin layer over a pure render function that tests call directly."""
from __future__ import annotations

from typing import Sequence

from labkit.checks import golden_shift_table
from labkit.vocab import WordTokenizer, seed_vocab

# Where the one-token shift happens, and what each choice does to the pipeline.
SHIFT_PLACES = {
    "dataset": ("external", False),  # builder shifts (labels = x[1:]), loss compares logit t with label t
    "loss": ("internal", True),      # labels = input_ids, the loss compares logit t with label t+1
    "both": ("external", True),      # the double shift
    "none": ("internal", False),     # no shift: the model is trained to copy its input
}
CHAPTER_RECORD = "<bos> the cat sat on the mat <eos>"


def render_shift(where: str, record: Sequence[int] | None = None, tokenizer: WordTokenizer | None = None) -> dict:
    """Pure render of the shift panel for one choice of where the shift happens.

    Builds the example, measures which token each logit is trained on (from the loss gradient,
    checks.golden_shift_table) and returns {"html", "text", "offset", "verdict", "rows"}: offset = k
    when logit t is trained on token t+k (1 is correct).
    """
    from labkit.checks import ContractError
    from labkit.paradigms.autoregressive import ar_example, causal_lm_loss
    from labkit.viz import contract_html

    if where not in SHIFT_PLACES:
        raise ContractError(f"unknown shift place {where!r}; fix: one of {list(SHIFT_PLACES)}")
    tok = tokenizer or seed_vocab()
    record = list(record) if record is not None else tok.encode(CHAPTER_RECORD)
    builder_shift, loss_shifts = SHIFT_PLACES[where]
    build = lambda r: ar_example(r, shift=builder_shift)  # noqa: E731
    loss = lambda z, y: causal_lm_loss(z, y, shift=loss_shifts)  # noqa: E731
    rows = golden_shift_table(record, build, loss, len(tok))
    offsets = set()
    for r in rows:
        if r["trained_target"] is not None:
            later = [k - r["t"] for k in range(r["t"], len(record)) if record[k] == r["trained_target"]]
            offsets.add(later[0] if later else None)
    offset = offsets.pop() if len(offsets) == 1 else None
    verdict = {1: "correct: logit t is trained on token t+1",
               2: "DOUBLE SHIFT: logit t is trained on token t+2 (the loss still falls)",
               0: "NO SHIFT: logit t is trained on token t, its own input (a copy task)"}.get(offset, "inconsistent alignment")
    example = build(record)
    n_targets = sum(r["trained_target"] is not None for r in rows)
    text = (f"shift in: {where} | builder shift={builder_shift}, loss shift={loss_shifts} | "
            f"{n_targets} trained positions | {verdict}")
    html = contract_html(example, tokenizer=tok, targets=[r["trained_target"] for r in rows],
                         title=f"shift happens in: {where}") + f"<p><b>{verdict}</b></p>"
    return {"html": html, "text": text, "offset": offset, "verdict": verdict, "rows": rows}


class ShiftPanel:
    """Toggle where the shift happens (dataset / loss / both / none); the contract table re-renders."""

    def __init__(self, record: Sequence[int] | None = None, tokenizer: WordTokenizer | None = None, value: str = "loss"):
        import ipywidgets as W

        self.record, self.tokenizer = record, tokenizer
        self.control = W.ToggleButtons(options=list(SHIFT_PLACES), value=value, description="shift in")
        self.output = W.HTML()
        self.renders = 0
        self.control.observe(self._update, names="value")
        self._update()

    def _update(self, change=None):
        state = render_shift(self.control.value, self.record, self.tokenizer)
        self.output.value = state["html"]
        self.state = state
        self.renders += 1

    def ui(self):
        import ipywidgets as W

        return W.VBox([self.control, self.output])


def shift_panel(record: Sequence[int] | None = None, tokenizer: WordTokenizer | None = None):
    """The shift panel as a widget to display."""
    return ShiftPanel(record, tokenizer).ui()

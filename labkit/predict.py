"""Predict, then reveal: the learner commits a guess before a headline measurement, then sees it scored.

    q = ask("02.rare_error", "Does the rare class get a larger or smaller error?",
            choices=["larger", "smaller", "no detectable difference"])     # or number=(lo, hi, step)
    ... the claim / compare cell ...
    reveal(q, measured)      # measured: one of the choices, or a number

In a live kernel `ask` displays a control (ToggleButtons for choices, a FloatSlider for a number)
and a "commit" button; the committed answer is stored on the Question (`q.answer`). The display
carries a static fallback (labkit.widgets.base.FallbackBox): the question and its choices as HTML,
never the answer, so a saved notebook read without a kernel shows the question, not a widget repr.

`reveal` prints ONE deterministic line, e.g.
    PREDICTION 02.rare_error: measured smaller; your prediction: none committed
(nobody commits in a headless run, so the line is stable under nbval) and displays HTML that folds
the measurement in a <details> element, so a static rendering shows the question and hides the answer.
Scores: a choice is right or wrong; a number gets its absolute and relative error.
"""
from __future__ import annotations

import html as _html
from dataclasses import dataclass, field

import ipywidgets as W
from IPython.display import HTML

from labkit.contracts import ContractError, finite
from labkit.widgets.base import FallbackBox

__all__ = ["ask", "reveal", "Question"]


@dataclass
class Question:
    """One prediction: its id, the question, choices (a list) or number (lo, hi, step), and the answer
    committed by the learner (None until committed). `widget` is the FallbackBox `ask` displayed."""

    id: str
    question: str
    choices: list | None = None
    number: tuple | None = None
    answer: object = None
    widget: object = field(default=None, repr=False)

    def commit(self, value) -> None:
        """Store a committed answer (what the commit button does), validated like a measurement."""
        self.answer = _validated(self, value, "answer")

    def static_html(self) -> str:
        """The question and what can be answered, without the answer."""
        q = _html.escape(self.question)
        if self.choices is not None:
            body = "<ul style='margin:2px 0'>" + "".join(f"<li>{_html.escape(str(c))}</li>" for c in self.choices) + "</ul>"
        else:
            lo, hi, step = self.number
            body = f"<p style='margin:2px 0'>answer with a number between {lo:g} and {hi:g} (step {step:g})</p>"
        return (f"<div class='lab-predict' style='border-left:4px solid #4c8bf5;padding:4px 10px;margin:4px 0'>"
                f"<p style='margin:2px 0'><b>Predict before you read on ({_html.escape(self.id)}):</b> {q}</p>{body}"
                f"<p style='color:#777;font-size:11px;margin:2px 0'>commit your answer in a running notebook; the "
                f"measurement below reveals it</p></div>")

    def static_text(self) -> str:
        opts = " / ".join(map(str, self.choices)) if self.choices is not None else \
            f"a number in [{self.number[0]:g}, {self.number[1]:g}]"
        return f"PREDICT {self.id}: {self.question} ({opts})"


def _validated(q: Question, value, name: str):
    if q.choices is not None:
        if value not in q.choices:
            raise ContractError(f"{name} {value!r} is not one of the choices of {q.id} {q.choices}; fix: derive it from "
                                "the record (e.g. its verdict) so that it names one of the choices")
        return value
    return finite(value, name)


def _check_id(id) -> str:
    if not isinstance(id, str) or not id or " " in id:
        raise ContractError(f"prediction id must be a non-empty string without spaces, got {id!r}; fix: e.g. '03.double_shift'")
    return id


def ask(id: str, question: str, choices=None, number=None) -> Question:
    """Ask the learner to commit a prediction; returns the Question (its `answer` fills on commit).

    choices: a list of >= 2 distinct strings or numbers; number: (lo, hi, step) with lo < hi and
    0 < step <= hi - lo. Exactly one of the two. In an IPython kernel the control is displayed.
    """
    _check_id(id)
    if not isinstance(question, str) or not question.strip():
        raise ContractError(f"question must be a non-empty string, got {question!r}")
    if (choices is None) == (number is None):
        raise ContractError("ask needs exactly one of choices=[...] or number=(lo, hi, step); fix: pass one of them")
    if choices is not None:
        if isinstance(choices, (str, bytes)) or not hasattr(choices, "__iter__"):
            raise ContractError(f"choices must be a list, got {type(choices).__name__}; fix: choices=['a', 'b']")
        choices = list(choices)
        if len(choices) < 2 or len(set(map(str, choices))) != len(choices):
            raise ContractError(f"choices must be >= 2 distinct options, got {choices}; fix: give two or more different options")
        q = Question(id, question, choices=choices)
    else:
        if isinstance(number, (str, bytes)) or not hasattr(number, "__len__") or len(number) != 3:
            raise ContractError(f"number must be (lo, hi, step), got {number!r}")
        lo, hi, step = (finite(v, f"number[{k}]") for k, v in enumerate(number))
        if not lo < hi:
            raise ContractError(f"number range needs lo < hi, got ({lo:g}, {hi:g}); fix: swap or widen the range")
        if not 0 < step <= hi - lo:
            raise ContractError(f"number step must satisfy 0 < step <= hi - lo, got {step:g} for ({lo:g}, {hi:g})")
        q = Question(id, question, number=(lo, hi, step))
    q.widget = _widget(q)
    _display(q.widget)
    return q


def _widget(q: Question) -> FallbackBox:
    """The live control: the question, ToggleButtons or a FloatSlider, a commit button, a status line."""
    if q.choices is not None:
        control = W.ToggleButtons(options=[str(c) for c in q.choices], value=None, description="")
        to_answer = lambda v: None if v is None else q.choices[[str(c) for c in q.choices].index(v)]  # noqa: E731
    else:
        lo, hi, step = q.number
        control = W.FloatSlider(value=lo + step * round((hi - lo) / 2 / step), min=lo, max=hi, step=step,
                                continuous_update=False, readout_format=".3g")
        to_answer = lambda v: v  # noqa: E731
    button = W.Button(description="commit", button_style="primary", tooltip="commit this prediction")
    status = W.HTML("<i>not committed yet</i>")

    def on_commit(_):
        value = to_answer(control.value)
        if value is None:
            status.value = "<i>choose an answer first</i>"
            return
        q.commit(value)
        status.value = f"committed: <b>{_html.escape(str(q.answer))}</b> (scored where the measurement is revealed)"

    button.on_click(on_commit)
    box = FallbackBox([W.HTML(f"<b>Predict ({_html.escape(q.id)}):</b> {_html.escape(q.question)}"),
                       W.HBox([control, button]), status])
    box.add_class("lab-predict")
    box.fallback = (q.static_html(), q.static_text())
    q.control, q.button, q.status = control, button, status
    return box


def _display(obj) -> None:
    """Display in an IPython kernel; do nothing in plain Python (tests, scripts)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:     # pragma: no cover - IPython ships with ipywidgets
        return
    if get_ipython() is not None:
        display(obj)


class Reveal(dict):
    """What reveal returns (a dict); as a cell's last expression it displays nothing more."""

    def _ipython_display_(self):
        pass


def reveal(q: Question, measured, fmt: str = ".3g") -> Reveal:
    """Score the committed prediction against the measurement; print one line, display a folded answer.

    measured: one of q.choices, or a finite number (for a number question; fmt formats it).
    Returns {"id", "measured", "answer" (None if nothing committed), "correct" (choices), "abs_error",
    "rel_error" (numbers; rel_error None when measured is 0)}.
    """
    if not isinstance(q, Question):
        raise ContractError(f"reveal needs the Question returned by ask(...), got {type(q).__name__}; fix: q = ask(...), "
                            "then reveal(q, measured)")
    measured = _validated(q, measured, "measured")
    out = Reveal(id=q.id, measured=measured, answer=q.answer)
    shown = str(measured) if q.choices is not None else format(measured, fmt)
    if q.answer is None:
        verdict = "none committed"
    elif q.choices is not None:
        out["correct"] = q.answer == measured
        verdict = f"{q.answer} ({'right' if out['correct'] else 'wrong'})"
    else:
        out["abs_error"] = abs(q.answer - measured)
        out["rel_error"] = out["abs_error"] / abs(measured) if measured != 0 else None
        rel = "" if out["rel_error"] is None else f", {out['rel_error']:.0%} relative"
        verdict = f"{format(q.answer, fmt)} (off by {format(out['abs_error'], fmt)}{rel})"
    print(f"PREDICTION {q.id}: measured {shown}; your prediction: {verdict}")
    if q.answer is None:
        yours = "no prediction committed (commit one in a running notebook before you run this cell)"
    else:
        yours = f"your prediction: {_html.escape(verdict)}"
    html = (f"<details class='lab-reveal'><summary><b>Reveal ({_html.escape(q.id)}):</b> {_html.escape(q.question)}"
            f"</summary><p>measured: <b>{_html.escape(shown)}</b>; {yours}</p></details>")
    _display(HTML(html))
    return out


def verdict_choices(arms) -> list[str]:
    """The three answers a comparison can give, in words: ["<A> better", "no detectable difference", "<A> worse"]."""
    if len(arms) != 2:
        raise ContractError(f"a comparison has two arms (A, control), got {arms!r}")
    return [f"{arms[0]} better", "no detectable difference", f"{arms[0]} worse"]


def verdict_of(record) -> str:
    """The verdict of a compare(...) record, worded as verdict_choices(record['arms']) words it."""
    if not isinstance(record, dict) or record.get("kind") != "comparison":
        raise ContractError("verdict_of needs the record compare(...) returned; fix: rec = compare(...); verdict_of(rec)")
    return record["verdict"].replace("A ", f"{record['arms'][0]} ", 1)

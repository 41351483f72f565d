"""The panel skeleton every labkit panel shares, and the static fallback every displayed widget carries.

A panel is: controls -> a pure render function -> an output. `Panel` wires that once: a subclass
builds its controls (`build_controls()`, {name: widget}) and says how to render (`render(**values)`
returning a dict with "html" and "text", usually one call of a module-level `render_*` function);
the base observes every control, re-renders into one HTML output and counts renders.

`FallbackBox` is the display mechanism, shared with labkit.predict: a VBox whose
`_repr_mimebundle_` returns the widget view (a live kernel shows the widget) plus text/html and
text/plain of a static rendering in the same display bundle, so a page without a widget manager
(GitHub, nbviewer, VS Code preview, the book) shows HTML, never a `VBox(...)` repr.
"""
from __future__ import annotations

import html as _html

import ipywidgets as W

__all__ = ["FallbackBox", "Panel", "fallback_html"]

STATIC_NOTE = "static view of the default state; run the notebook to move the controls"


def fallback_html(body: str, note: str = STATIC_NOTE) -> str:
    """The static rendering wrapped with a one-line note saying it is a snapshot."""
    return (f"<div class='lab-static'>{body}<p style='color:#777;font-size:11px;margin:2px 0'>"
            f"{_html.escape(note)}</p></div>")


class FallbackBox(W.VBox):
    """A VBox displayed together with a static rendering: set `.fallback = (html, text)`.

    Its display bundle holds application/vnd.jupyter.widget-view+json (the live widget), text/html
    (what a page without a kernel renders) and text/plain (never the `VBox(...)` repr).
    """

    fallback: tuple = ("", "")

    def _repr_mimebundle_(self, include=None, exclude=None):
        data = dict(super()._repr_mimebundle_() or {})
        html, text = self.fallback
        data["text/html"] = html
        data["text/plain"] = text
        return data


class Panel:
    """Controls -> render -> output, written once.

    Subclasses define `build_controls()` -> {name: widget} (each also becomes an attribute; values
    are passed to `render` under those names) and `render(**values) -> dict` with "html" and "text".
    They may override `arrange(controls, output)` (the layout) and `extra()` (widgets under the output,
    e.g. the "what the model learns" view). `self.state` holds the last render, `self.renders`
    counts renders, `self.control` is the first control.
    """

    def __init__(self):
        self.controls = self.build_controls()
        for name, c in self.controls.items():
            setattr(self, name, c)
        self.control = next(iter(self.controls.values()))
        self.output = W.HTML()
        self.renders = 0
        for c in self.controls.values():
            c.observe(self._update, names="value")
        self._update()

    def build_controls(self) -> dict:
        raise NotImplementedError

    def render(self, **values) -> dict:
        raise NotImplementedError

    def arrange(self, controls: list, output) -> list:
        """The panel's rows: by default each control on its own row, then the output."""
        return list(controls) + [output]

    def extra(self) -> list:
        return []

    def static_html(self) -> str:
        """What a page without a kernel shows: the default state as rendered (plus extra views)."""
        return self.state["html"]

    def values(self) -> dict:
        return {name: c.value for name, c in self.controls.items()}

    def _update(self, change=None):
        self.state = self.render(**self.values())
        self.output.value = self.state["html"]
        self.renders += 1
        self.on_render()

    def on_render(self):
        """Hook after every render (e.g. to switch a stored run to the selected state)."""

    def ui(self) -> FallbackBox:
        """The panel as one widget (class 'lab-panel') whose display carries the static fallback."""
        box = FallbackBox(self.arrange(list(self.controls.values()), self.output) + self.extra())
        box.add_class("lab-panel")
        box.fallback = (fallback_html(self.static_html()), self.state["text"])
        return box

"""Responsiveness: every panel's pure render function answers in under 100 ms (median and p95),
and so does the "what the model learns" view (it reads stored runs; training happens only when the
learner presses "train this state now").

Prints the timing table (`pytest -s` shows it).
"""
import inspect
import statistics
import time

import matplotlib.pyplot as plt
import pytest

import labkit.widgets as widgets
from labkit.widgets.base import Panel
from labkit.widgets.learned import PANELS, render_learned

RENDERERS = sorted(name for name, fn in inspect.getmembers(widgets, inspect.isfunction)
                   if name.startswith("render_") and fn.__module__.startswith(widgets.__name__))
BUDGET_S = 0.100


def test_every_panel_class_has_a_render_function():
    panels = [name for name, cls in inspect.getmembers(widgets, inspect.isclass)
              if name.endswith("Panel") and issubclass(cls, Panel) and cls is not Panel and not name.startswith("_")]
    assert len(panels) >= 9
    assert len(RENDERERS) >= len(panels)


def _p95(fn):
    fn()                                    # warm-up: first call builds caches, imports
    plt.close("all")
    times = []
    for _ in range(15):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        plt.close("all")
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


@pytest.mark.parametrize("name", [n for n in RENDERERS if n != "render_learned"])
def test_render_is_fast(name):
    median, p95 = _p95(getattr(widgets, name))
    print(f"{name:<34} median {median * 1e3:6.1f} ms  p95 {p95 * 1e3:6.1f} ms")
    assert median < BUDGET_S and p95 < 2 * BUDGET_S, f"{name}: median {median * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms"


@pytest.mark.parametrize("panel", sorted(PANELS))
def test_learned_view_is_fast(panel):
    state = PANELS[panel]["states"][0]
    median, p95 = _p95(lambda: render_learned(panel, state))
    print(f"render_learned({panel!r})".ljust(34) + f" median {median * 1e3:6.1f} ms  p95 {p95 * 1e3:6.1f} ms")
    assert median < BUDGET_S and p95 < 2 * BUDGET_S

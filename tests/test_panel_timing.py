"""Responsiveness: every panel's pure render function answers in under 100 ms (median and p95).

No panel in the lab trains when a control moves (training happens in the notebook's own cells), so
all of them are held to the 100 ms budget. Prints the timing table (`pytest -s` shows it).
"""
import inspect
import statistics
import time

import matplotlib.pyplot as plt
import pytest

import labkit.widgets as widgets

RENDERERS = sorted(name for name, fn in inspect.getmembers(widgets, inspect.isfunction)
                   if name.startswith("render_") and fn.__module__ == widgets.__name__)
BUDGET_S = 0.100


def test_every_panel_class_has_a_render_function():
    panels = [name for name, cls in inspect.getmembers(widgets, inspect.isclass)
              if name.endswith("Panel") and cls.__module__ == widgets.__name__]
    assert len(RENDERERS) >= len(panels) >= 8


@pytest.mark.parametrize("name", RENDERERS)
def test_render_is_fast(name):
    fn = getattr(widgets, name)
    fn()                                    # warm-up: first call builds caches, imports
    plt.close("all")
    times = []
    for _ in range(15):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        plt.close("all")
    times.sort()
    median, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
    print(f"{name:<34} median {median * 1e3:6.1f} ms  p95 {p95 * 1e3:6.1f} ms")
    assert median < BUDGET_S and p95 < 2 * BUDGET_S, f"{name}: median {median * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms"

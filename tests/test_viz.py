"""Tests of labkit.viz."""
import matplotlib.pyplot as plt
import pytest
import torch

from labkit.viz import length_histogram, reliability_figure, svg_bars


def test_length_histogram():
    fig = length_histogram({"a": [1, 2, 2], "b": [5, 5]}, max_len=6)
    assert len(fig.axes) == 1
    plt.close(fig)


def test_svg_bars():
    small = svg_bars([0.5, -0.25, 0.1], names=["a", "b", "c"], highlight=1, title="t")
    assert small.count("<rect") == 3 and ">b<" in small and "#2e7d32" in small
    big = svg_bars([0.001 * k - 0.5 for k in range(1000)], highlight=3)
    assert "<path" in big and big.count("<rect") == 0
    with pytest.raises(ValueError):
        svg_bars([])


def test_reliability_figure_draws():
    from labkit.paradigms.supervised import reliability

    p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    fig = reliability_figure({"a": reliability(p, torch.tensor([0, 1, 1]), 5), "b": reliability(p, torch.tensor([0, 0, 1]), 5)})
    assert len(fig.axes) == 2
    plt.close(fig)

"""Shared fixtures. Figures render with Agg in this process only (never exported to kernels)."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from labkit.data import RunningSumTask  # noqa: E402
from labkit.vocab import WordTokenizer, seed_vocab  # noqa: E402


@pytest.fixture
def tok():
    return seed_vocab()


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield



@pytest.fixture
def digits():
    """A tokenizer of the ten digits (the counting task's vocabulary)."""
    return WordTokenizer([str(d) for d in range(10)])


@pytest.fixture
def task(digits):
    """A short running-count task: 6 steps of 0..4 (labkit.data.RunningSumTask)."""
    return RunningSumTask(n_steps=6, max_step=4, tokenizer=digits)

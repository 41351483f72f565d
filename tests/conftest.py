"""Shared fixtures. Figures render with Agg in this process only (never exported to kernels)."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def tok():
    from labkit.vocab import seed_vocab

    return seed_vocab()


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


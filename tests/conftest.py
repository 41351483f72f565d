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


def pytest_collectstart(collector):
    """nbval: do not compare stderr (library warnings vary by version) or widget/HTML blobs."""
    if getattr(collector, "path", None) is not None and collector.path.suffix == ".ipynb" and hasattr(collector, "skip_compare"):
        collector.skip_compare += ("stderr", "application/javascript")

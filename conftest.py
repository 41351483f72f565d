"""Root conftest: applies to the notebooks collected by nbval as well as to tests/."""
import os

# nbval waits a hard-coded 5 s for each iopub message after a cell's reply; on a loaded laptop (or
# two kernels on two cores) a finished cell's output can take longer to arrive, and the notebook
# failed with "Timeout of 5 seconds exceeded waiting for output". Wait up to this many seconds.
NBVAL_OUTPUT_TIMEOUT = float(os.environ.get("LABKIT_NBVAL_OUTPUT_TIMEOUT", "120"))


def pytest_collectstart(collector):
    """nbval: do not compare stderr (library warnings differ between versions and machines)."""
    if getattr(collector, "path", None) is not None and collector.path.suffix == ".ipynb":
        collector.skip_compare = tuple(getattr(collector, "skip_compare", ())) + ("stderr",)


def pytest_itemcollected(item):
    """nbval cells: a patient wait for outputs (see NBVAL_OUTPUT_TIMEOUT)."""
    if hasattr(item, "output_timeout"):
        item.output_timeout = NBVAL_OUTPUT_TIMEOUT

"""Root conftest: applies to the notebooks collected by nbval as well as to tests/."""


def pytest_collectstart(collector):
    """nbval: do not compare stderr (library warnings differ between versions and machines)."""
    if getattr(collector, "path", None) is not None and collector.path.suffix == ".ipynb":
        collector.skip_compare = tuple(getattr(collector, "skip_compare", ())) + ("stderr",)

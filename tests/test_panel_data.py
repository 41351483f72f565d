"""The stored "what the model learns" runs (data/panels/*.json): complete, small, registered, and
reproduced by re-running a few states now (same seed, CPU)."""
import json

import pytest

from labkit.datafiles import DATA_DIR, GENERATORS, load_manifest, sha256
from labkit.widgets.learned import PANELS, run_state, stored_runs

TOL = 0.02          # losses and accuracies: another CPU's float rounding moves the 4th decimal, not the 2nd


@pytest.mark.parametrize("panel", sorted(PANELS))
def test_every_state_is_stored_small_and_registered(panel):
    path = DATA_DIR / "panels" / f"{panel}.json"
    data = stored_runs(panel)
    assert data is not None, f"{path} missing: run `make panel-data`"
    assert sorted(data["runs"]) == sorted(PANELS[panel]["states"])
    assert path.stat().st_size < 64 * 1024
    for run in data["runs"].values():
        assert run["curve"] and run["metrics"] and run["samples"] and run["device"] == "cpu"
        assert all(v == v for v in run["metrics"].values())      # no NaN
    name = f"panels/{panel}.json"
    assert name in GENERATORS and load_manifest()[name]["sha256"] == sha256(path)


def _close(stored: dict, fresh: dict):
    assert fresh["steps"] == stored["steps"] and fresh["seed"] == stored["seed"]
    for (s1, v1), (s2, v2) in zip(stored["curve"], fresh["curve"]):
        assert s1 == s2 and v2 == pytest.approx(v1, abs=TOL)
    for k, v in stored["metrics"].items():
        assert fresh["metrics"][k] == pytest.approx(v, abs=TOL), k
    for k, v in stored["floors"].items():
        assert fresh["floors"][k] == pytest.approx(v, abs=1e-4), k


@pytest.mark.parametrize("panel,state", [("mask_ratio", "token/0.3"), ("temperature", "1"), ("shift", "both")])
def test_rerun_matches_the_stored_run(panel, state):
    stored = stored_runs(panel)["runs"][state]
    _close(stored, run_state(panel, state, seed=stored["seed"], device="cpu"))


@pytest.mark.slow
@pytest.mark.parametrize("panel,state", [("padding", "left/arange"), ("reduction", "sum"), ("mask_ratio", "deletion/0.5")])
def test_rerun_matches_the_stored_run_slow(panel, state):
    stored = stored_runs(panel)["runs"][state]
    _close(stored, run_state(panel, state, seed=stored["seed"], device="cpu"))


def test_stored_runs_show_the_consequences_the_panels_teach():
    """What the stored runs say, as the panels show it (a guard that the data mean what the views claim)."""
    shift = stored_runs("shift")["runs"]
    assert shift["both"]["metrics"]["accuracy at t+2"] > shift["both"]["metrics"]["next-token accuracy"]
    assert shift["loss"]["metrics"]["next-token accuracy"] > shift["both"]["metrics"]["next-token accuracy"]
    assert shift["none"]["metrics"]["accuracy at t (copying the input)"] > 0.9
    pad = stored_runs("padding")["runs"]
    key = "held-out loss, each sentence at its own positions (nats)"
    assert pad["left/arange"]["metrics"][key] > pad["left/mask"]["metrics"][key]
    json.dumps(pad)

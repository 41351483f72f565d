"""The stored "what the model learns" runs (data/panels/*.json): complete, small, registered, and
reproduced by re-running a few states now (same seed, CPU)."""
import json

import pytest

from labkit.datafiles import DATA_DIR, GENERATORS, load_manifest, sha256
from labkit.widgets.learned import PANELS, run_state, state_key, stored_runs
from labkit.widgets.learned_finetune import DPO_BETAS, DPO_REDUCTIONS, SS_ALPHA_MINS, SS_STATES

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
    assert ("series" in fresh) == ("series" in stored)
    if "series" in stored:
        assert fresh["series"]["x"] == stored["series"]["x"]
        for k, v in stored["series"]["lines"].items():
            assert fresh["series"]["lines"][k] == pytest.approx(v, abs=TOL), k


@pytest.mark.parametrize("panel,state", [("mask_ratio", "token/0.3"), ("temperature", "1"), ("shift", "both")])
def test_rerun_matches_the_stored_run(panel, state):
    stored = stored_runs(panel)["runs"][state]
    _close(stored, run_state(panel, state, seed=stored["seed"], device="cpu"))


@pytest.mark.parametrize("panel,state", [("dpo", "0.3/sum"), ("scheduled_sampling", "teacher_forcing")])
def test_finetune_panels_rerun_and_tick_the_whole_bar(panel, state):
    """The two fine-tuning panels (about 5 s each alone on a CPU: the shared start, then the state): the
    stored run is reproduced, and the callback that drives the live bar reaches its last step."""
    stored = stored_runs(panel)["runs"][state]
    ticks = []
    fresh = run_state(panel, state, seed=stored["seed"], device="cpu", callback=lambda step, m, loss: ticks.append(step))
    _close(stored, fresh)
    assert max(ticks) == PANELS[panel]["progress"] - 1 and ticks == sorted(ticks)


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


def test_finetune_panel_states_match_their_slider_stops():
    assert [state_key("dpo", beta=b, reduction=r) for b in DPO_BETAS for r in DPO_REDUCTIONS] == list(PANELS["dpo"]["states"])
    assert state_key("dpo", beta=0.2, reduction="sum") is None
    assert {state_key("scheduled_sampling", shape=sh, alpha_min=a) for sh in ("linear", "constant") for a in (1.0,)} \
        == {"teacher_forcing"}
    assert state_key("scheduled_sampling", shape="linear", alpha_min=0.5) == "linear/0.50" in SS_STATES
    assert state_key("scheduled_sampling", shape="linear", alpha_min=0.3) is None
    assert len(SS_STATES) == 4 * len(SS_ALPHA_MINS) + 1


def test_finetune_stored_runs_show_what_the_panels_teach():
    """DPO: a larger beta keeps the policy nearer the reference, and at one beta the length-normalised
    objective moves farther (notebook 11's point: one beta is not one strength); DPO lengthens answers.
    Scheduled sampling: on notebook 07's task no schedule beats teacher forcing free running, and feeding
    only model tokens (constant alpha 0) is the worst."""
    dpo = {k: r["metrics"] for k, r in stored_runs("dpo")["runs"].items()}
    kl = "KL to the reference on sampled answers (nats)"
    for r in DPO_REDUCTIONS:
        kls = [dpo[f"{b:g}/{r}"][kl] for b in DPO_BETAS]
        assert kls == sorted(kls, reverse=True), (r, kls)
    assert all(dpo[f"{b:g}/token_mean"][kl] > dpo[f"{b:g}/sum"][kl] for b in DPO_BETAS)
    ref_fillers = dpo["0.3/sum"]["the reference: filler words per answer"]
    assert dpo["0.3/sum"]["filler words per answer"] > ref_fillers
    ss = {k: r["metrics"] for k, r in stored_runs("scheduled_sampling")["runs"].items()}
    fr = "free-running accuracy (mean over the 16 positions)"
    assert all(ss["teacher_forcing"][fr] >= m[fr] for m in ss.values())
    assert min(ss, key=lambda k: ss[k][fr]) == "constant/0.00"
    assert all(m[fr] > m["the checkpoint: free-running accuracy"] for k, m in ss.items() if k != "constant/0.00")

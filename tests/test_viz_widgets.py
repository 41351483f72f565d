"""Pure render functions (contract table, figures, the shift panel) and their thin widget layer."""
import matplotlib.pyplot as plt
import pytest

from labkit.batch import collate, pack
from labkit.checks import ContractError
from labkit.paradigms.autoregressive import ar_example
from labkit.viz import accuracy_bars, contract_figure, contract_html, contract_rows, contract_text, loss_curves
from labkit.widgets import SHIFT_PLACES, ShiftPanel, render_shift


def test_contract_rows_mark_supervised_and_predicted(tok):
    b = collate([ar_example(tok.encode("<bos> the cat sat"))], tok.pad_id)
    rows = {r["name"]: r for r in contract_rows(b, tokenizer=tok)}
    assert rows["token"]["cells"] == ["<bos>", "the", "cat", "sat"]
    assert rows["logit t trains on"]["cells"] == ["the", "cat", "sat", "·"]
    assert rows["logit t trains on"]["kinds"][-1] == "ignored"
    unshifted = {r["name"]: r for r in contract_rows(b, tokenizer=tok, loss_shifts=False)}
    assert unshifted["logit t trains on"]["cells"][0] == "<bos>"


def test_contract_renderers(tok):
    left = collate([{"input_ids": [1, 42, 95]}, {"input_ids": [1]}], tok.pad_id, side="left")
    html = contract_html(left, row=1, tokenizer=tok, title="left")
    assert html.count("<tr>") == 8 and "&lt;pad&gt;" in html and "left" in html
    text = contract_text(left, row=1, tokenizer=tok)
    assert "position_ids" in text and "<pad>" in text
    packed = pack([{"input_ids": [1, 42]}, {"input_ids": [1, 95]}], max_len=4)
    assert "document" in contract_text(packed)
    fig = contract_figure(left, tokenizer=tok, title="t")
    assert len(fig.axes) == 1
    plt.close(fig)
    plt.close(loss_curves({"a": [3, 2, 1]}, floor=0.5))
    plt.close(accuracy_bars({"a": {"x": 0.5, "y": 0.2}, "b": {"x": 0.1, "y": 0.9}}))


@pytest.mark.parametrize("where,offset", [("dataset", 1), ("loss", 1), ("both", 2), ("none", 0)])
def test_render_shift_measures_the_offset(where, offset):
    state = render_shift(where)
    assert state["offset"] == offset
    assert ("DOUBLE SHIFT" in state["verdict"]) == (where == "both")
    assert where in state["text"] and "<table" in state["html"]


def test_render_shift_refuses_unknown_place():
    with pytest.raises(ContractError, match="unknown shift place"):
        render_shift("model")


def test_shift_panel_rerenders_on_every_change():
    panel = ShiftPanel()
    assert panel.renders == 1 and panel.state["offset"] == 1
    seen = {}
    for where in SHIFT_PLACES:
        panel.control.value = where
        seen[where] = panel.output.value
    assert panel.renders == 1 + len(SHIFT_PLACES)   # initial render + one per change
    assert len(set(seen.values())) == len(SHIFT_PLACES)
    assert panel.state["offset"] == 0 and "NO SHIFT" in panel.output.value
    assert panel.ui().children[0] is panel.control


# ----------------------------------------------------------------------------- the panel base and static fallbacks

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _all_panels():
    from labkit.widgets import (ContrastiveTemperaturePanel, DPOWeightsPanel, MaskRatioPanel, MixturePanel, PaddingPanel,
                                ReductionPanel, ScheduledSamplingPanel, SoftTargetPanel, TemperaturePanel)

    return [ShiftPanel(), TemperaturePanel(), PaddingPanel(), ReductionPanel(), MaskRatioPanel(), ScheduledSamplingPanel(),
            ContrastiveTemperaturePanel(), SoftTargetPanel(), MixturePanel(), DPOWeightsPanel()]


def test_every_panel_displays_with_a_static_fallback_of_its_default_state():
    for panel in _all_panels():
        bundle = panel.ui()._repr_mimebundle_()
        name = type(panel).__name__
        assert WIDGET_VIEW in bundle, name
        assert panel.state["html"] in bundle["text/html"], name            # the default state, as rendered
        assert not bundle["text/plain"].startswith("VBox"), name


def test_learned_panels_show_the_stored_run_of_the_selected_state():
    from labkit.widgets import MaskRatioPanel, PaddingPanel, TemperaturePanel

    shift = ShiftPanel()
    assert "stored run" in shift.learned.output.value and "<svg" in shift.learned.output.value
    assert "what the model learns" in shift.ui()._repr_mimebundle_()["text/html"].lower()
    shift.control.value = "both"
    assert "state <code>both</code>" in shift.learned.output.value
    pad = PaddingPanel()
    pad.positions.value = "arange"
    assert "left/arange" in pad.learned.output.value
    t = TemperaturePanel()
    t.control.value = 3.0                  # between the slider stops: no stored run, the button trains it
    assert "between the stored settings" in t.learned.output.value
    m = MaskRatioPanel()
    m.kind.value = "deletion"
    assert "deletion/0.3" in m.learned.output.value


def test_panel_base_wires_controls_render_and_output():
    import ipywidgets as W

    from labkit.widgets.base import Panel

    class Echo(Panel):
        def build_controls(self):
            return {"a": W.IntSlider(value=1), "b": W.Dropdown(options=["x", "y"], value="x")}

        def render(self, a, b):
            return {"html": f"<p>{a}{b}</p>", "text": f"{a}{b}"}

    p = Echo()
    p.a.value = 2
    p.b.value = "y"
    assert p.renders == 3 and p.output.value == "<p>2y</p>" and p.control is p.a
    assert p.ui()._repr_mimebundle_()["text/plain"] == "2y"

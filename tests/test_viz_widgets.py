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

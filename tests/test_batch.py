"""labkit core: seeding, device choice, the Batch contract, padding, positions, collate, pack."""
import pytest
import torch

import labkit
from labkit import IGNORE
from labkit.batch import Batch, collate, pack, pad, position_ids_from_mask, unpack
from labkit.checks import ContractError, audit
from labkit.data import load_instructions
from labkit.paradigms.autoregressive import completion_example


def test_seed_everything_env_overrides(monkeypatch):
    monkeypatch.delenv("LABKIT_SEED", raising=False)
    assert labkit.seed_everything() == labkit.DEFAULT_SEED
    assert labkit.seed_everything(7) == 7
    a = torch.rand(3)
    monkeypatch.setenv("LABKIT_SEED", "5")
    assert labkit.seed_everything(7) == 5
    b = torch.rand(3)
    labkit.seed_everything(7)
    assert torch.equal(torch.rand(3), b) and not torch.equal(a, b)
    monkeypatch.setenv("LABKIT_SEED", "five")
    with pytest.raises(ContractError, match="LABKIT_SEED"):
        labkit.seed_everything()


def test_device_override(monkeypatch):
    monkeypatch.setenv("LABKIT_DEVICE", "cpu")
    assert labkit.device().type == "cpu"
    monkeypatch.setenv("LABKIT_DEVICE", "tpu")
    with pytest.raises(ContractError, match="LABKIT_DEVICE"):
        labkit.device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("LABKIT_DEVICE", "cuda")
        with pytest.raises(ContractError, match="no CUDA"):
            labkit.device()
    monkeypatch.delenv("LABKIT_DEVICE")
    assert labkit.device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_import_has_no_side_effects():
    import subprocess
    import sys

    code = "import sys, labkit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_pad_right_and_left():
    ids, mask = pad([[5, 6, 7], [8]], pad_value=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad([[5, 6, 7], [8]], pad_value=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == torch.long


@pytest.mark.parametrize("kwargs,match", [
    (dict(seqs=[[1]], pad_value=None), "pad id missing"),
    (dict(seqs=[[1]], pad_value=0, side="middle"), "padding side"),
    (dict(seqs=[], pad_value=0), "no sequences"),
    (dict(seqs=["the cat"], pad_value=0), "list of token ids"),
    (dict(seqs=[[1.5, 2.0]], pad_value=0), "integer"),
])
def test_pad_refuses_bad_input(kwargs, match):
    with pytest.raises(ContractError, match=match):
        pad(**kwargs)


def test_position_ids_from_mask_chapter_examples():
    right = torch.tensor([[1, 1, 1, 1, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1, 1]])
    assert position_ids_from_mask(right).tolist() == [[0, 1, 2, 3, 0, 0]]
    assert position_ids_from_mask(left).tolist() == [[0, 0, 0, 1, 2, 3]]
    with pytest.raises(ContractError, match=r"\[B,T\]"):
        position_ids_from_mask(torch.ones(1, 3, 3))


def test_collate_defaults_to_internal_shift_labels(tok):
    b = collate([{"input_ids": [1, 42, 95]}, {"input_ids": [1, 42]}], tok.pad_id)
    assert b.labels.tolist() == [[1, 42, 95], [1, 42, IGNORE]]
    assert b.loss_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert b.position_ids.tolist() == [[0, 1, 2], [0, 1, 0]]
    assert b.n_targets() == 5 and b.weights is None
    left = collate([{"input_ids": [1, 42, 95]}, {"input_ids": [1, 42]}], tok.pad_id, side="left", positions="arange")
    assert left.position_ids.tolist() == [[0, 1, 2], [0, 1, 2]]
    w = collate([{"input_ids": [1, 2], "weight": 2.0}, {"input_ids": [3]}], 0)
    assert w.weights.tolist() == [2.0, 1.0]


def test_collate_refuses_bad_input(tok):
    with pytest.raises(ContractError, match="labels for"):
        collate([{"input_ids": [1, 2, 3], "labels": [2, 3]}], tok.pad_id)
    with pytest.raises(ContractError, match="input_ids"):
        collate([{"ids": [1]}], tok.pad_id)
    with pytest.raises(ContractError, match="positions policy"):
        collate([{"input_ids": [1]}], tok.pad_id, positions="rope")
    with pytest.raises(ContractError, match="pad id missing"):
        collate([{"input_ids": [1]}], None)


def test_batch_validates_shapes():
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ContractError, match="labels has shape"):
        Batch(input_ids=ids, attention_mask=torch.ones(2, 3), position_ids=ids, labels=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ContractError, match="attention_mask"):
        Batch(input_ids=ids, attention_mask=torch.ones(2, 4), position_ids=ids, labels=ids)
    with pytest.raises(ContractError, match="int64"):
        Batch(input_ids=ids, attention_mask=torch.ones(2, 3), position_ids=ids, labels=ids.float())
    b = Batch(input_ids=ids, attention_mask=torch.ones(2, 3), position_ids=ids, labels=ids)
    assert b.to("cpu").input_ids.shape == (2, 3)
    assert "<table" in b._repr_html_()


def test_pack_positions_labels_and_block_diagonal_mask():
    docs = [{"input_ids": [11, 12, 13]}, {"input_ids": [21, 22]}, {"input_ids": [31, 32, 33, 34]}]
    b = pack(docs, max_len=6)
    # rows are padded to the longest packed row (5), not to max_len
    assert b.input_ids.tolist() == [[11, 12, 13, 21, 22], [31, 32, 33, 34, 0]]
    assert b.position_ids.tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert b.labels.tolist() == [[IGNORE, 12, 13, IGNORE, 22], [IGNORE, 32, 33, 34, IGNORE]]
    assert b.document_ids.tolist() == [[0, 0, 0, 1, 1], [2, 2, 2, 2, -1]]
    m = b.attention_mask
    assert m.shape == (2, 5, 5) and m.dtype == torch.bool
    assert m[1, 4].tolist() == [False, False, False, False, True]            # padding sees only itself
    assert m[0, 4, 3] and m[0, 4, 4] and not m[0, 4, 2] and not m[0, 3, 0]   # doc 2 cannot see doc 1
    assert m[0, 2, 0] and not m[0, 0, 2]                                     # causal inside a document
    flat = pack(docs, max_len=6, block_diagonal=False)
    assert flat.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert [d["input_ids"] for d in unpack(b)] == [d["input_ids"] for d in docs]


def test_pack_refuses_bad_input():
    with pytest.raises(ContractError, match="max_len"):
        pack([{"input_ids": [1, 2, 3]}], max_len=2)
    with pytest.raises(ContractError, match="empty"):
        pack([{"input_ids": []}], max_len=2)
    with pytest.raises(ContractError, match="no examples"):
        pack([], max_len=2)


def test_pack_matches_flattening_collator_on_sft_examples(tok):
    """Cross-check with completion labels: pack() == DataCollatorWithFlattening (labels and positions)."""
    from transformers import DataCollatorWithFlattening

    records = load_instructions()[:3]
    examples = []
    for r in records:
        ids, amask = tok.encode_chat(r["messages"])
        start = amask.index(1)
        ex = completion_example(ids[:start], ids[start:])
        examples.append({"input_ids": ex["input_ids"], "labels": ex["labels"]})
    total = sum(len(e["input_ids"]) for e in examples)
    ours, theirs = pack(examples, max_len=total), DataCollatorWithFlattening()(examples)
    assert torch.equal(ours.input_ids, theirs["input_ids"]) and torch.equal(ours.labels, theirs["labels"])
    assert torch.equal(ours.position_ids, theirs["position_ids"])


def test_pad_equals_eos_collator_hides_eos(tok):
    """transformers' CLM collator with pad == eos: audit() reports eos_label_masked; masking by position does not."""
    from transformers import DataCollatorForLanguageModeling

    hf = tok.to_hf()
    hf.pad_token = hf.eos_token
    rows = [tok.encode_chat(r["messages"])[0] for r in load_instructions()[:4]]
    out = DataCollatorForLanguageModeling(hf, mlm=False)([{"input_ids": r} for r in rows])
    assert "eos_label_masked" in [f.code for f in audit(dict(out), pad_id=hf.pad_token_id, eos_id=tok.eos_id)]
    fixed = collate([{"input_ids": r} for r in rows], pad_id=tok.eos_id)
    assert audit(fixed, pad_id=tok.eos_id, eos_id=tok.eos_id) == []

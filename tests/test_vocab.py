"""The word tokenizer, the chapter's ids and the transformers bridge (chat template + assistant mask)."""
import pytest

from labkit.checks import ContractError
from labkit.vocab import SPECIALS, WordTokenizer, seed_vocab


def test_chapter_ids(tok):
    assert tok.encode("the cat sat on the mat", add_bos=True, add_eos=True) == [1, 42, 95, 317, 18, 42, 510, 2]
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.mask_id, tok.unk_id) == (0, 1, 2, 3, 4)
    assert tok.decode([1, 42, 95, 2]) == "<bos> the cat <eos>"
    assert tok.decode([1, 42, 95, 2], skip_special=True) == "the cat"
    assert tok.encode("the zebra") == [42, tok.unk_id]
    assert tok.token(-100) == "·" and len(tok) == 512


def test_word_tokenizer_refuses_bad_input():
    with pytest.raises(ContractError, match="duplicate"):
        WordTokenizer(["a", "b", "a"])
    with pytest.raises(ContractError, match="whitespace"):
        WordTokenizer(["a b"])
    with pytest.raises(ContractError, match="<pad>"):
        WordTokenizer(["a"], specials=("<unk>",))
    tok = WordTokenizer(["a", "b"])
    assert len(tok) == len(SPECIALS) + 2
    with pytest.raises(ContractError, match="IGNORE"):
        tok.decode([-100])
    with pytest.raises(ContractError, match="string"):
        tok.encode([1, 2])
    with pytest.raises(ContractError, match="role"):
        tok.encode_chat([{"role": "system", "content": "a"}])


def test_to_hf_matches_ids_and_decodes(tok):
    hf = tok.to_hf()
    text = "the cat sat on the mat"
    assert hf(text)["input_ids"] == tok.encode(text)
    assert hf.pad_token_id == tok.pad_id and hf.eos_token_id == tok.eos_id and hf.mask_token_id == tok.mask_id
    assert hf.decode(tok.encode(text)) == text
    assert len(hf) == len(tok)


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "reverse 1 2 3"}, {"role": "assistant", "content": "3 2 1"}],
    [{"role": "user", "content": "copy A B"}, {"role": "assistant", "content": "A B"},
     {"role": "user", "content": "count A A"}, {"role": "assistant", "content": "2"}],
])
def test_chat_template_assistant_mask_matches_transformers(tok, messages):
    """labkit's own chat encoding == transformers' apply_chat_template with return_assistant_tokens_mask."""
    hf = tok.to_hf()
    out = hf.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = tok.encode_chat(messages)
    assert list(out["input_ids"]) == ids
    assert list(out["assistant_masks"]) == mask
    assert sum(mask) > 0 and mask[0] == 0
    # the assistant turn ends with <eos>, which is part of the completion
    assert ids[max(i for i, m in enumerate(mask) if m)] == tok.eos_id


def test_generation_prompt(tok):
    hf = tok.to_hf()
    msgs = [{"role": "user", "content": "sort 3 1 2"}]
    ids = hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert list(ids) == tok.encode_chat(msgs, add_generation_prompt=True)[0]
    assert list(ids)[-1] == tok.assistant_id

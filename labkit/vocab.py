"""A word-level tokenizer with the lab's special tokens, and its bridge to transformers.

`seed_vocab()` reproduces the chapter's ids (<bos>=1 <eos>=2 the=42 cat=95 sat=317 on=18 mat=510),
so every notebook can print the same numbers as the text it teaches.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from labkit.contracts import ContractError

SPECIALS = ("<pad>", "<bos>", "<eos>", "<mask>", "<unk>", "<user>", "<assistant>", "<sep>")

# The chat format: "<user> ... <assistant> ... <eos>". The assistant's words and its <eos> are the
# completion (inside {% generation %}, so transformers can return an assistant-token mask); the
# "<assistant>" role marker is prompt.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ '<user> ' + message['content'] + ' ' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '<assistant> ' }}{% generation %}{{ message['content'] + ' <eos>' }}{% endgeneration %}{{ ' ' }}"
    "{%- else -%}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<assistant> ' }}{%- endif -%}"
)


class WordTokenizer:
    """Whitespace word tokenizer: ids 0..len(specials)-1 are the specials, then `words` in order.

    Unknown words map to <unk>. Special tokens written in the text ("<user>") are recognised.
    """

    def __init__(self, words: Iterable[str], specials: Sequence[str] = SPECIALS):
        tokens = list(specials) + [w for w in words if w not in specials]
        if len(set(tokens)) != len(tokens):
            dup = sorted({t for t in tokens if tokens.count(t) > 1})
            raise ContractError(f"duplicate words in the vocabulary: {dup[:5]}; fix: each word once")
        bad = [t for t in tokens if not t or any(c.isspace() for c in t)]
        if bad:
            raise ContractError(f"vocabulary entries must be non-empty and contain no whitespace: {bad[:5]}")
        for needed in ("<pad>", "<unk>"):
            if needed not in specials:
                raise ContractError(f"specials must include {needed}; fix: keep labkit.vocab.SPECIALS")
        self.specials = tuple(specials)
        self.itos = tokens
        self.stoi = {t: i for i, t in enumerate(tokens)}

    def __len__(self) -> int:
        return len(self.itos)

    def _id(self, name: str) -> int | None:
        return self.stoi.get(name)

    pad_id = property(lambda self: self._id("<pad>"))
    bos_id = property(lambda self: self._id("<bos>"))
    eos_id = property(lambda self: self._id("<eos>"))
    mask_id = property(lambda self: self._id("<mask>"))
    unk_id = property(lambda self: self._id("<unk>"))
    user_id = property(lambda self: self._id("<user>"))
    assistant_id = property(lambda self: self._id("<assistant>"))
    sep_id = property(lambda self: self._id("<sep>"))

    @property
    def special_ids(self) -> list[int]:
        return [self.stoi[s] for s in self.specials]

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """'the cat' -> [42, 95] (with seed_vocab); unknown words -> <unk>."""
        if not isinstance(text, str):
            raise ContractError(f"encode() takes a string, got {type(text).__name__}")
        ids = [self.stoi.get(w, self.unk_id) for w in text.split()]
        if add_bos:
            ids = [self.bos_id] + ids
        if add_eos:
            ids = ids + [self.eos_id]
        return ids

    def token(self, i: int) -> str:
        """One id as text; IGNORE (-100) shows as '·'."""
        if i == -100:
            return "·"
        if not 0 <= int(i) < len(self):
            raise ContractError(f"token id {int(i)} is outside the vocabulary [0, {len(self)})")
        return self.itos[int(i)]

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """[42, 95] -> 'the cat'. Ids must be in the vocabulary (replace -100 labels first)."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self):
                raise ContractError(f"cannot decode id {i}: outside the vocabulary [0, {len(self)})"
                                    + ("; it is IGNORE: decode labels with .token() or drop -100 first" if i == -100 else ""))
            if skip_special and self.itos[i] in self.specials:
                continue
            out.append(self.itos[i])
        return " ".join(out)

    def encode_chat(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
        """Render messages in the lab's chat format; return (ids, assistant_mask).

        assistant_mask is 1 on each assistant turn's words and its <eos> (the completion), 0 on
        user turns and on the <assistant> role marker: the same tokens transformers marks with
        `apply_chat_template(..., return_assistant_tokens_mask=True)` on `to_hf()`.
        """
        ids: list[int] = []
        mask: list[int] = []
        for m in messages:
            role, content = m.get("role"), m.get("content")
            if not isinstance(content, str):
                raise ContractError(f"message content must be a string, got {type(content).__name__}")
            if role == "user":
                part = [self.user_id] + self.encode(content)
                ids += part
                mask += [0] * len(part)
            elif role == "assistant":
                answer = self.encode(content) + [self.eos_id]
                ids += [self.assistant_id] + answer
                mask += [0] + [1] * len(answer)
            else:
                raise ContractError(f"unknown chat role {role!r}; fix: use 'user' or 'assistant'")
        if add_generation_prompt:
            ids.append(self.assistant_id)
            mask.append(0)
        return ids, mask

    def to_hf(self):
        """A transformers PreTrainedTokenizerFast with the same ids and a chat template whose
        assistant part sits in {% generation %} (for return_assistant_tokens_mask)."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        core = Tokenizer(models.WordLevel(vocab=dict(self.stoi), unk_token="<unk>"))
        core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
        named = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "mask_token": "<mask>",
                 "unk_token": "<unk>", "sep_token": "<sep>"}
        named = {k: v for k, v in named.items() if v in self.stoi}
        extra = [s for s in self.specials if s not in named.values()]
        return PreTrainedTokenizerFast(tokenizer_object=core, chat_template=CHAT_TEMPLATE,
                                       additional_special_tokens=extra, **named)


# The chapter's ids and the words of the lab's synthetic worlds, at fixed ids.
SEED_IDS = {
    "the": 42, "cat": 95, "sat": 317, "on": 18, "mat": 510,
    "a": 43, "dog": 96, "bird": 97, "ran": 318, "slept": 319, "under": 19, "near": 21, "to": 20,
    "and": 22, ".": 23, "?": 24, "rug": 509, "sofa": 508, "box": 507,
    "explain": 200, "gradient": 201, "clipping": 202, "rescales": 203, "large": 204, "gradients": 205,
    "reverse": 210, "sort": 211, "copy": 212, "count": 213, "apple": 220, "good": 221, "bad": 222,
    **{str(d): 140 + d for d in range(10)},
    **{chr(ord("A") + k): 160 + k for k in range(10)},
}
SEED_VOCAB_SIZE = 512


def seed_vocab() -> WordTokenizer:
    """The chapter's tokenizer: <pad>=0 <bos>=1 <eos>=2 <mask>=3 ..., the=42 cat=95 sat=317 on=18
    mat=510, 512 ids; ids that no word uses are reserved as <unused_N> (as BERT's [unusedN])."""
    by_id = {i: w for w, i in SEED_IDS.items()}
    words = [by_id.get(i, f"<unused_{i}>") for i in range(len(SPECIALS), SEED_VOCAB_SIZE)]
    return WordTokenizer(words, specials=SPECIALS)

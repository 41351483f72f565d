"""Synthetic worlds whose distributions are KNOWN, so every learned model can be scored against
the truth (the true next-token distribution, the entropy floor, the best possible accuracy)."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch

from labkit.batch import pad
from labkit.contracts import ContractError
from labkit.datafiles import DATA_DIR, jsonl_records
from labkit.datafiles import main as _main
from labkit.vocab import WordTokenizer, seed_vocab

# A first-order Markov "grammar" over the chapter's words: subject nouns are followed by verbs,
# object nouns end a sentence, so every word has a few likely successors.
CAT_WORLD = {
    "<bos>": {"the": 1.0},
    "the": {"cat": 0.45, "dog": 0.25, "mat": 0.2, "rug": 0.1},
    "cat": {"sat": 0.7, "ran": 0.3},
    "dog": {"sat": 0.4, "ran": 0.6},
    "sat": {"on": 0.8, "under": 0.2},
    "ran": {"to": 0.7, "on": 0.3},
    "on": {"the": 1.0},
    "under": {"the": 1.0},
    "to": {"the": 1.0},
    "mat": {"<eos>": 0.7, "and": 0.3},
    "rug": {"<eos>": 0.8, "and": 0.2},
    "and": {"the": 1.0},
    "<eos>": {"<bos>": 1.0},
}


class MarkovWorld:
    """A Markov chain over tokenizer ids: x_{t+1} ~ P[x_t]. The stream runs sentence after sentence
    (<bos> ... <eos> <bos> ...).

    P is [V,V] (rows of tokens outside the world are zero). Everything a model could learn is
    computable: next_token_probs, k_step_probs (P^k), entropy_rate, bayes_accuracy.
    """

    def __init__(self, table: dict = CAT_WORLD, tokenizer: WordTokenizer | None = None):
        self.tokenizer = tokenizer or seed_vocab()
        V = len(self.tokenizer)
        self.P = torch.zeros(V, V, dtype=torch.float64)
        for word, successors in table.items():
            if abs(sum(successors.values()) - 1) > 1e-9:
                raise ContractError(f"successor probabilities of {word!r} sum to {sum(successors.values())}, not 1")
            for nxt, p in successors.items():
                for w in (word, nxt):
                    if w not in self.tokenizer.stoi:
                        raise ContractError(f"word {w!r} is not in the tokenizer's vocabulary")
                self.P[self.tokenizer.stoi[word], self.tokenizer.stoi[nxt]] = p
        self.states = sorted({self.tokenizer.stoi[w] for w in table})
        missing = [self.tokenizer.itos[j] for j in self.P.sum(0).nonzero().flatten().tolist() if j not in self.states]
        if missing:
            raise ContractError(f"words {missing} can be reached but have no successors; fix: give each a row")

    @property
    def vocab_size(self) -> int:
        return self.P.shape[0]

    def stationary(self) -> torch.Tensor:
        """pi with pi P = pi ([V]), by power iteration."""
        pi = torch.zeros(self.vocab_size, dtype=torch.float64)
        pi[self.states] = 1.0 / len(self.states)
        for _ in range(2000):
            pi = pi @ self.P
        return pi / pi.sum()

    def sample_stream(self, n_tokens: int, generator: torch.Generator | None = None, start: str = "<bos>") -> torch.Tensor:
        """One stream of n_tokens ids, [n_tokens], starting at `start`."""
        cur = self.tokenizer.stoi[start]
        out = torch.empty(n_tokens, dtype=torch.long)
        P = self.P.float()
        for t in range(n_tokens):
            out[t] = cur
            cur = int(torch.multinomial(P[cur], 1, generator=generator))
        return out

    def sample_blocks(self, n_blocks: int, block_len: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n_blocks, block_len] consecutive windows of one long stream (LM pretraining data)."""
        return self.sample_stream(n_blocks * block_len, generator).view(n_blocks, block_len)

    def sample_sentences(self, n: int, generator: torch.Generator | None = None, max_len: int = 24) -> list[list[int]]:
        """n sentences "<bos> ... <eos>" (lists of ids, each at most max_len tokens), one document per
        sentence (SFT-style data, padded per batch). Chains run in parallel; sentences longer
        than max_len are dropped and replaced by new draws."""
        bos, eos = self.tokenizer.bos_id, self.tokenizer.eos_id
        if max_len < 3:
            raise ContractError(f"max_len must be >= 3 (<bos> word <eos>), got {max_len}")
        rows = self.P.sum(-1, keepdim=True)
        cdf = (self.P / torch.where(rows > 0, rows, torch.ones_like(rows))).cumsum(-1)
        cdf[:, -1] = 1.0   # inverse-CDF sampling: the first id whose cumulative probability exceeds u
        out: list[list[int]] = []
        while len(out) < n:
            m = 2 * (n - len(out)) + 8
            seqs = torch.full((m, max_len), -1, dtype=torch.long)
            seqs[:, 0] = bos
            cur = seqs[:, 0].clone()
            for t in range(1, max_len):
                u = torch.rand(m, 1, generator=generator, dtype=torch.float64)
                cur = torch.searchsorted(cdf[cur], u, right=True).flatten()
                seqs[:, t] = cur
            for row in seqs.tolist():
                if eos in row and len(out) < n:
                    out.append(row[: row.index(eos) + 1])
        return out

    def k_step_probs(self, ids: torch.Tensor, k: int = 1) -> torch.Tensor:
        """p(x_{t+k} | x_t) for each id: [...] -> [..., V]."""
        Pk = torch.linalg.matrix_power(self.P, k)
        return Pk[ids]

    def next_token_probs(self, ids: torch.Tensor) -> torch.Tensor:
        return self.k_step_probs(ids, 1)

    def entropy_rate(self, k: int = 1) -> float:
        """H(x_{t+k} | x_<=t) = sum_s pi_s H(P^k[s]) in nats: the lowest loss any model can reach
        when trained to predict k tokens ahead (k=1: the next-token entropy rate)."""
        P = torch.linalg.matrix_power(self.P, k)
        logs = torch.where(P > 0, P.log(), torch.zeros_like(P))
        return float((self.stationary() * -(P * logs).sum(-1)).sum())

    def fill_probs(self, left: int, right: int) -> torch.Tensor:
        """p(x_t | x_{t-1}=left, x_{t+1}=right) ∝ P[left, x] P[x, right], [V]: the known answer of a
        one-token fill-in-the-blank (what an ideal masked LM predicts for a lone [MASK])."""
        joint = self.P[left] * self.P[:, right]
        if float(joint.sum()) == 0:
            raise ContractError("no token can sit between these two words in this world")
        return joint / joint.sum()

    def posterior(self, ids: torch.Tensor, visible: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """p(x_t | every visible token of the row) for each position, by forward-backward.

        ids [B,T] (hidden positions may hold any id, e.g. <mask>), visible bool [B,T] -> [B,T,V]
        float64. The chain starts from `prior` (default: the stationary distribution, right for a
        window cut from a long stream). A visible position gets its own one-hot; a hidden one the
        exact conditional given everything visible on both sides (what an ideal denoiser predicts
        for that visibility pattern). fill_probs is the case of one hidden token between two visible ones.
        """
        if ids.dim() != 2 or visible.shape != ids.shape:
            raise ContractError(f"posterior needs ids [B,T] and a visible mask of the same shape, got "
                                f"{tuple(ids.shape)} and {tuple(visible.shape)}")
        ids, visible = ids.cpu(), visible.cpu().bool()
        S = torch.tensor(self.states)
        index = torch.full((self.vocab_size,), -1, dtype=torch.long)
        index[S] = torch.arange(len(S))
        obs = index[ids.clamp(0, self.vocab_size - 1)]
        if bool((visible & obs.lt(0)).any()):
            raise ContractError("a visible token is not a state of this world: its probability is 0")
        Ps = self.P[S][:, S]
        pi = self._stationary_states() if prior is None else torch.as_tensor(prior, dtype=torch.float64)[S]
        B, T = ids.shape
        evidence = torch.ones(B, T, len(S), dtype=torch.float64)
        rows = visible.nonzero()
        evidence[rows[:, 0], rows[:, 1]] = 0.0
        evidence[rows[:, 0], rows[:, 1], obs[rows[:, 0], rows[:, 1]]] = 1.0
        fwd = torch.empty(B, T, len(S), dtype=torch.float64)
        a = pi[None] * evidence[:, 0]
        fwd[:, 0] = a / a.sum(-1, keepdim=True).clamp_min(1e-300)
        for t in range(1, T):
            a = (fwd[:, t - 1] @ Ps) * evidence[:, t]
            fwd[:, t] = a / a.sum(-1, keepdim=True).clamp_min(1e-300)
        bwd = torch.ones(B, T, len(S), dtype=torch.float64)
        for t in range(T - 2, -1, -1):
            b = (evidence[:, t + 1] * bwd[:, t + 1]) @ Ps.T
            bwd[:, t] = b / b.sum(-1, keepdim=True).clamp_min(1e-300)
        post = fwd * bwd
        total = post.sum(-1, keepdim=True)
        if bool((total <= 0).any()):
            raise ContractError("the visible tokens are impossible in this world (probability 0)")
        out = torch.zeros(B, T, self.vocab_size, dtype=torch.float64)
        out[:, :, S] = post / total
        return out

    def sequence_logprob(self, ids: torch.Tensor) -> torch.Tensor:
        """log p(x_1..x_T) of each row under the chain started from the stationary distribution, [B]."""
        ids = torch.as_tensor(ids).cpu()
        pi = torch.zeros(self.vocab_size, dtype=torch.float64)
        pi[self.states] = self._stationary_states()
        return pi[ids[:, 0]].log() + self.P[ids[:, :-1], ids[:, 1:]].log().sum(-1)

    def _stationary_states(self) -> torch.Tensor:
        """The stationary distribution restricted to the world's states (same values as
        stationary()[states], by power iteration on the small state-to-state matrix)."""
        S = torch.tensor(self.states)
        Ps = self.P[S][:, S]
        pi = torch.full((len(S),), 1.0 / len(S), dtype=torch.float64)
        for _ in range(2000):
            pi = pi @ Ps
        return pi / pi.sum()

    def sample_windows(self, n: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n, length] windows of the stationary chain, all rows sampled in parallel (fast): each row
        starts from the stationary distribution, as a window cut at a random place of a long stream."""
        if n < 1 or length < 1:
            raise ContractError(f"need n >= 1 and length >= 1, got {n}, {length}")
        S = torch.tensor(self.states)
        Ps = self.P[S][:, S]
        cdf = Ps.cumsum(-1)
        cdf[:, -1] = 1.0
        start_cdf = self._stationary_states().cumsum(-1)
        start_cdf[-1] = 1.0
        u = torch.rand(n, 1, generator=generator, dtype=torch.float64)
        cur = torch.searchsorted(start_cdf[None].expand(n, -1).contiguous(), u, right=True).flatten()
        out = torch.empty(n, length, dtype=torch.long)
        out[:, 0] = cur
        for t in range(1, length):
            u = torch.rand(n, 1, generator=generator, dtype=torch.float64)
            cur = torch.searchsorted(cdf[cur], u, right=True).flatten()
            out[:, t] = cur
        return S[out]

    def legal_rate(self, ids) -> float:
        """Share of consecutive pairs (a, b) in a sequence that the world allows (P[a, b] > 0)."""
        ids = torch.as_tensor(ids).flatten().cpu()
        if ids.numel() < 2:
            raise ContractError("legal_rate needs at least 2 tokens")
        return float(self.P[ids[:-1], ids[1:]].gt(0).double().mean())

    def bayes_accuracy(self, k: int = 1) -> float:
        """Accuracy of the best possible predictor of x_{t+k} from x_t: sum_s pi_s max_j P^k[s,j]."""
        Pk = torch.linalg.matrix_power(self.P, k)
        return float((self.stationary() * Pk.max(-1).values).sum())


class KBackSource:
    """A source whose token depends only on the token k steps back.

    Symbols are m ids. x_0..x_{k-1} are uniform; then x_t = (x_{t-k} + 1 mod m) with prob 1 - eps,
    else uniform. Tokens fewer than k apart are independent, so a model that reads fewer than k
    previous tokens can do no better than log m nats; one that reads k can reach
    conditional_entropy(k).
    """

    def __init__(self, k: int = 6, symbols: list[int] | None = None, eps: float = 0.1, tokenizer: WordTokenizer | None = None):
        if k < 1:
            raise ContractError(f"k (how many steps back a token copies from) must be >= 1, got {k}")
        if not 0 <= eps <= 1:
            raise ContractError(f"eps must be a probability, got {eps}")
        tok = tokenizer or seed_vocab()
        self.symbols = symbols or [tok.stoi[str(d)] for d in range(10)]
        self.k, self.eps, self.m = k, eps, len(self.symbols)

    def sample(self, n: int, length: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n, length] token ids."""
        idx = torch.empty(n, length, dtype=torch.long)
        idx[:, : self.k] = torch.randint(self.m, (n, min(self.k, length)), generator=generator)
        for t in range(self.k, length):
            keep = torch.rand(n, generator=generator) >= self.eps
            noise = torch.randint(self.m, (n,), generator=generator)
            idx[:, t] = torch.where(keep, (idx[:, t - self.k] + 1) % self.m, noise)
        return torch.tensor(self.symbols)[idx]

    def conditional_entropy(self, context_len: int) -> float:
        """H(x_t | the previous context_len tokens), nats, for t >= k."""
        if context_len < self.k:
            return math.log(self.m)
        p_hit = 1 - self.eps + self.eps / self.m
        p_other = self.eps / self.m
        h = -p_hit * math.log(p_hit)
        if p_other > 0:
            h -= (self.m - 1) * p_other * math.log(p_other)
        return h


# ----------------------------------------------------------------------------- instruction tasks

INSTRUCTION_TASKS = ("reverse", "sort", "copy", "count")
INSTRUCTION_ALPHABETS = {"digits": [str(d) for d in range(10)], "letters": [chr(ord("A") + k) for k in range(10)]}


def instruction_answer(task: str, items: list[str]) -> list[str]:
    """The known answer of one toy instruction: reverse / sort / copy the items, or count them.

    ['3', '1', '2'] -> reverse ['2', '1', '3'], sort ['1', '2', '3'], copy ['3', '1', '2'], count ['3'].
    Sorting follows the alphabet's order (digits 0-9, letters A-J).
    """
    if task not in INSTRUCTION_TASKS:
        raise ContractError(f"unknown instruction task {task!r}; fix: one of {INSTRUCTION_TASKS}")
    if not items:
        raise ContractError("an instruction needs at least one item")
    if task == "reverse":
        return list(reversed(items))
    if task == "sort":
        return sorted(items)
    if task == "copy":
        return list(items)
    if len(items) > 9:
        raise ContractError(f"count answers with one digit: at most 9 items, got {len(items)}")
    return [str(len(items))]


def make_instructions(n: int = 2000, seed: int = 0, min_items: int = 2, max_items: int = 5) -> list[dict]:
    """n chat records {"task", "messages": [user, assistant]}, e.g. user "sort 3 1 2" -> assistant "1 2 3".

    Tasks cycle reverse/sort/copy/count (n/4 each); items are min_items..max_items draws (with
    replacement) from one alphabet, digits or letters. Deterministic for a given seed.
    """
    if n < 1:
        raise ContractError(f"n must be >= 1, got {n}")
    if not 1 <= min_items <= max_items <= 9:
        raise ContractError(f"need 1 <= min_items <= max_items <= 9, got {min_items}, {max_items}")
    g = torch.Generator().manual_seed(seed)
    names = list(INSTRUCTION_ALPHABETS)
    records = []
    for i in range(n):
        task = INSTRUCTION_TASKS[i % len(INSTRUCTION_TASKS)]
        alphabet = INSTRUCTION_ALPHABETS[names[int(torch.randint(len(names), (1,), generator=g))]]
        k = int(torch.randint(min_items, max_items + 1, (1,), generator=g))
        items = [alphabet[j] for j in torch.randint(len(alphabet), (k,), generator=g).tolist()]
        records.append({"task": task, "messages": [
            {"role": "user", "content": " ".join([task] + items)},
            {"role": "assistant", "content": " ".join(instruction_answer(task, items))}]})
    return records


def write_instructions(path, n: int = 2000, seed: int = 0) -> str:
    """Write make_instructions(n, seed) as JSON lines (one record a line); return the file's sha256."""
    text = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in make_instructions(n, seed))
    Path(path).write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def load_instructions(path=None) -> list[dict]:
    """Read the instruction JSONL (default: data/instructions.jsonl of the repository) and check
    every record: a user turn "task items..." followed by the assistant's correct answer."""


    path = Path(path) if path is not None else DATA_DIR / "instructions.jsonl"
    records = []
    for lineno, r in jsonl_records(path, "regenerate it with labkit.data.write_instructions(path)"):
        records.append(validate_instruction(r, f"{path.name} line {lineno}"))
    if not records:
        raise ContractError(f"{path.name} holds no instruction records; fix: regenerate it with "
                            "labkit.data.write_instructions(path)")
    return records


def validate_instruction(r, where: str) -> dict:
    """One instruction record: {"task": str, "messages": [{"role": "user", "content": "task items..."},
    {"role": "assistant", "content": the task's answer}]}; anything else raises a ContractError naming
    `where` (file and line) and the field."""
    fix = "fix: regenerate the file (labkit.data.write_instructions) or repair that record"
    if not isinstance(r, dict):
        raise ContractError(f"{where}: a record is a JSON object, got {type(r).__name__}; {fix}")
    for field, kind in (("task", str), ("messages", list)):
        if field not in r:
            raise ContractError(f"{where}: field {field!r} is missing; {fix}")
        if not isinstance(r[field], kind):
            raise ContractError(f"{where}: field {field!r} must be a {kind.__name__}, got {type(r[field]).__name__}; {fix}")
    msgs = r["messages"]
    if len(msgs) != 2 or not all(isinstance(m, dict) for m in msgs) or [m.get("role") for m in msgs] != ["user", "assistant"]:
        raise ContractError(f"{where}: field 'messages' holds one user and one assistant message (in that order); {fix}")
    for k, m in enumerate(msgs):
        if not isinstance(m.get("content"), str):
            raise ContractError(f"{where}: messages[{k}] has no text 'content'; {fix}")
    if r["task"] not in INSTRUCTION_TASKS:
        raise ContractError(f"{where}: unknown task {r['task']!r}; known: {INSTRUCTION_TASKS}; {fix}")
    task, *items = msgs[0]["content"].split() or [""]
    if task != r["task"] or not items:
        raise ContractError(f"{where}: the user message must read '{r['task']} item item ...'; {fix}")
    if msgs[1]["content"].split() != instruction_answer(task, items):
        raise ContractError(f"{where}: the assistant's answer is not the task's answer; {fix}")
    return r


# ----------------------------------------------------------------------------- digits and their captions

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Paraphrases: every template names the same digit, with its word ("seven") or its numeral ("7").
CAPTION_TEMPLATES = ("{name}", "the digit {name}", "a handwritten {num}", "the number {num}",
                     "a picture of a {num}", "it is {name}")


def digits_split(n_test: int = 597, seed: int = 0) -> dict:
    """scikit-learn's 8x8 digits (1797 images, shipped with the package: nothing is downloaded) as
    tensors: x_train/x_test float [N, 64] in [0, 1], y_train/y_test int64 [N]. The split is a
    seeded random permutation (the same seed gives the same split)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    if not 0 < n_test < len(y):
        raise ContractError(f"n_test must lie in (0, {len(y)}), got {n_test}")
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    test, train = order[:n_test], order[n_test:]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


class DigitCaptions:
    """Captions that name a digit in several wordings (paraphrases with one meaning).

    caption(7, 2) = "a handwritten 7". The tokenizer is a WordTokenizer over the captions' words
    (<pad> = 0). Items of one class are interchangeable in meaning: in a batch of image-caption
    pairs, another image of the same digit is a false negative for this caption.
    """

    def __init__(self, templates: tuple[str, ...] = CAPTION_TEMPLATES):

        if not templates:
            raise ContractError("at least one caption template is needed")
        self.templates = tuple(templates)
        words: list[str] = []
        for t in self.templates:
            for d in range(10):
                for w in t.format(name=DIGIT_NAMES[d], num=d).split():
                    if w not in words:
                        words.append(w)
        self.tokenizer = WordTokenizer(words)

    @property
    def n_wordings(self) -> int:
        return len(self.templates)

    def caption(self, label: int, wording: int) -> str:
        if not 0 <= int(label) <= 9 or not 0 <= int(wording) < self.n_wordings:
            raise ContractError(f"label must be 0..9 and wording 0..{self.n_wordings - 1}, got {label}, {wording}")
        return self.templates[int(wording)].format(name=DIGIT_NAMES[int(label)], num=int(label))

    def sample_wordings(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n] wording indices drawn uniformly."""
        return torch.randint(self.n_wordings, (n,), generator=generator)

    def encode(self, labels, wordings) -> torch.Tensor:
        """Captions of (label, wording) pairs as right-padded ids [B, L] (pad = tokenizer.pad_id)."""

        labels, wordings = torch.as_tensor(labels).flatten().tolist(), torch.as_tensor(wordings).flatten().tolist()
        if len(labels) != len(wordings):
            raise ContractError(f"{len(labels)} labels but {len(wordings)} wordings")
        ids, _ = pad([self.tokenizer.encode(self.caption(y, w)) for y, w in zip(labels, wordings)], self.tokenizer.pad_id)
        return ids

    def gallery(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every caption once: (ids [10*W, L], labels [10*W], wordings [10*W])."""
        labels = torch.arange(10).repeat_interleave(self.n_wordings)
        wordings = torch.arange(self.n_wordings).repeat(10)
        return self.encode(labels, wordings), labels, wordings


# ----------------------------------------------------------------------------- a counting language (notebook 07)

class RunningSumTask:
    """A counting language where one early mistake derails the rest and every answer is checkable.

    Prompt: <bos> a_1 .. a_n <sep>, increments a_k uniform in 0..max_step-1; answer: the running
    count s_k = (a_1 + ... + a_k) mod `modulus`, written as digits. A row is [2n + 2] ids:
    <bos> a_1..a_n <sep> s_1..s_n. Because s_k = s_{k-1} + a_k, a model that reads its own last
    count and writes one wrong count continues from it: every later count is wrong too.
    """

    def __init__(self, n_steps: int = 16, max_step: int = 4, modulus: int = 10, tokenizer: WordTokenizer | None = None):
        if n_steps < 1:
            raise ContractError(f"n_steps must be >= 1, got {n_steps}")
        if not 1 <= max_step <= modulus <= 10:
            raise ContractError(f"need 1 <= max_step <= modulus <= 10 (one digit per token), got {max_step}, {modulus}")
        self.tokenizer = tokenizer or seed_vocab()
        missing = [str(d) for d in range(modulus) if str(d) not in self.tokenizer.stoi]
        for name in ("bos_id", "sep_id"):
            if getattr(self.tokenizer, name) is None:
                missing.append(name)
        if missing:
            raise ContractError(f"the tokenizer lacks {missing}; fix: a WordTokenizer with the digits and the lab's specials")
        self.n, self.max_step, self.modulus = n_steps, max_step, modulus
        self.digit_ids = torch.tensor([self.tokenizer.stoi[str(d)] for d in range(modulus)])

    @property
    def prompt_len(self) -> int:
        """<bos>, n increments, <sep>: the answer starts at this position."""
        return self.n + 2

    @property
    def length(self) -> int:
        return 2 * self.n + 2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n, 2*n_steps + 2] rows <bos> a_1..a_n <sep> s_1..s_n."""
        a = torch.randint(self.max_step, (n, self.n), generator=generator)
        s = a.cumsum(1) % self.modulus
        tok = self.tokenizer
        return torch.cat([torch.full((n, 1), tok.bos_id), self.digit_ids[a], torch.full((n, 1), tok.sep_id),
                          self.digit_ids[s]], 1)

    def labels(self, ids: torch.Tensor) -> torch.Tensor:
        """Completion labels for a shifting loss: the answer tokens are targets, the prompt is IGNORE."""
        labels = ids.clone()
        labels[:, : self.prompt_len] = -100
        return labels

    def batches(self, batch_size: int, seed: int):
        """A batch function for fit(): step -> (input_ids [B, 2n+2], labels, step), fresh rows each step
        from a generator seeded by `seed` (the same stream for every arm that passes the same seed)."""
        data = torch.Generator().manual_seed(seed)

        def get(step: int):
            x = self.sample(batch_size, data)
            return x, self.labels(x), step
        return get

    def values(self, ids: torch.Tensor) -> torch.Tensor:
        """Digit ids -> their values 0..modulus-1; any other id -> -1."""
        lookup = torch.full((int(max(int(ids.max()), int(self.digit_ids.max()))) + 1,), -1, dtype=torch.long)
        lookup[self.digit_ids] = torch.arange(len(self.digit_ids))
        return lookup[ids.clamp_min(0).cpu()]

    def gold(self, prompts: torch.Tensor) -> torch.Tensor:
        """The correct answer ids [B, n] of prompts [B, >= prompt_len] (only the prompt part is read)."""
        a = self.values(prompts[:, 1: self.n + 1])
        if bool((a < 0).any()):
            raise ContractError("a prompt holds a non-digit increment; fix: pass rows made by sample()")
        return self.digit_ids[a.cumsum(1) % self.modulus]

    def errors(self, prompts: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        """Bool [B, n]: answer token k differs from the correct count s_k."""
        if answers.shape != (prompts.shape[0], self.n):
            raise ContractError(f"answers must be [B, n_steps] = {(prompts.shape[0], self.n)}, got {tuple(answers.shape)}")
        return answers.cpu().ne(self.gold(prompts.cpu()))

    def local_errors(self, prompts: torch.Tensor, answers: torch.Tensor) -> torch.Tensor:
        """Bool [B, n]: answer k is not (answer k-1) + a_k, i.e. wrong *given the model's own last
        count* (the first is compared with a_1). A model that continues consistently from its own
        mistake makes no local error after it, yet every later count is wrong."""
        if answers.shape != (prompts.shape[0], self.n):
            raise ContractError(f"answers must be [B, n_steps] = {(prompts.shape[0], self.n)}, got {tuple(answers.shape)}")
        a = self.values(prompts[:, 1: self.n + 1].cpu())
        v = self.values(answers.cpu())
        prev = torch.cat([torch.zeros_like(v[:, :1]), v[:, :-1]], 1)
        want = (prev + a) % self.modulus
        return v.ne(want) | prev.lt(0)


# ----------------------------------------------------------------------------- supervised worlds (notebook 02)

FINDINGS = ("pneumonia", "edema", "effusion", "nodule", "fracture")


class FindingsWorld:
    """Multi-label findings with a KNOWN joint law: 5 conditions, pneumonia and edema often together.

    Label pattern s in {0,1}^5: (pneumonia, edema) ~ pair_probs over (00, 10, 01, 11); effusion,
    nodule, fracture ~ independent Bernoulli(rates); an item without any finding is redrawn, so
    P(s) ∝ pair(s_0, s_1) prod_k rate_k^s_k (1 - rate_k)^(1 - s_k) over the 31 non-empty patterns.
    Features: x = sum_k s_k mu_k + noise * N(0, I), with fixed random directions mu [5, dim].
    """

    def __init__(self, dim: int = 16, pair_probs=(0.45, 0.1, 0.1, 0.35), rates=(0.3, 0.25, 0.2),
                 noise: float = 0.6, seed: int = 0):
        pair = torch.tensor(pair_probs, dtype=torch.float64)
        rate = torch.tensor(rates, dtype=torch.float64)
        if pair.shape != (4,) or (pair < 0).any() or abs(float(pair.sum()) - 1) > 1e-9:
            raise ContractError(f"pair_probs must be 4 probabilities (00, 10, 01, 11) summing to 1, got {pair_probs}")
        if rate.shape != (3,) or (rate <= 0).any() or (rate >= 1).any():
            raise ContractError(f"rates must be 3 probabilities in (0, 1), got {rates}")
        if dim < 1 or noise < 0:
            raise ContractError(f"need dim >= 1 and noise >= 0, got {dim}, {noise}")
        self.names, self.dim, self.noise = FINDINGS, dim, noise
        self.mu = torch.randn(len(FINDINGS), dim, generator=torch.Generator().manual_seed(seed))
        codes = torch.arange(1, 32)
        self.patterns = ((codes[:, None] >> torch.arange(5)) & 1).double()          # [31, 5], bit k = finding k
        s = self.patterns
        p = pair[(s[:, 0] + 2 * s[:, 1]).long()] * (rate ** s[:, 2:] * (1 - rate) ** (1 - s[:, 2:])).prod(-1)
        self.probs = p / p.sum()

    def marginals(self) -> torch.Tensor:
        """P(finding k) [5]."""
        return self.probs @ self.patterns

    def cooccurrence(self) -> torch.Tensor:
        """P(finding j and finding k) [5, 5] (the diagonal holds the marginals)."""
        return (self.patterns * self.probs[:, None]).T @ self.patterns

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x [n, dim] float, y [n, 5] multi-hot float, every row with at least one finding)."""
        if n < 1:
            raise ContractError(f"n must be >= 1, got {n}")
        idx = torch.multinomial(self.probs.float(), n, replacement=True, generator=generator)
        y = self.patterns[idx].float()
        x = y @ self.mu + self.noise * torch.randn(n, self.dim, generator=generator)
        return x, y


class AnnotatorWorld:
    """Items whose true label distribution q(y | x) is KNOWN, labelled by annotators who vote from it.

    K classes with prototypes mu [K, dim]. Item i: a class a_i, a neighbour b_i != a_i and a mix
    lambda_i ~ U(0, max_mix); q_i = (1 - lambda_i) e_a + lambda_i e_b and
    x_i = (1 - lambda_i) mu_a + lambda_i mu_b + noise * N(0, I): items between two prototypes are
    ambiguous, by a known amount. Each of n_annotators draws one vote y ~ q_i.
    """

    def __init__(self, n_classes: int = 4, dim: int = 8, max_mix: float = 0.5, n_annotators: int = 5,
                 noise: float = 0.25, seed: int = 0):
        if n_classes < 2 or dim < 1 or n_annotators < 1:
            raise ContractError(f"need n_classes >= 2, dim >= 1, n_annotators >= 1, got {n_classes}, {dim}, {n_annotators}")
        if not 0 <= max_mix <= 0.5:
            raise ContractError(f"max_mix must lie in [0, 0.5] (beyond 0.5 the neighbour becomes the main class), got {max_mix}")
        self.K, self.dim, self.max_mix, self.A, self.noise = n_classes, dim, max_mix, n_annotators, noise
        self.mu = 2.0 * torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(seed))

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict:
        """{"x" [n, dim], "q" [n, K] true label distributions, "votes" [n, A] int64 class ids,
        "ambiguity" [n] = entropy of q (nats)}."""
        if n < 1:
            raise ContractError(f"n must be >= 1, got {n}")
        a = torch.randint(self.K, (n,), generator=generator)
        b = (a + torch.randint(1, self.K, (n,), generator=generator)) % self.K
        lam = self.max_mix * torch.rand(n, generator=generator)
        q = torch.zeros(n, self.K)
        q[torch.arange(n), a] = 1 - lam
        q[torch.arange(n), b] += lam
        x = (1 - lam)[:, None] * self.mu[a] + lam[:, None] * self.mu[b] + self.noise * torch.randn(n, self.dim, generator=generator)
        votes = torch.multinomial(q, self.A, replacement=True, generator=generator)
        ent = -(q * q.clamp_min(1e-12).log()).sum(-1)
        return {"x": x, "q": q, "votes": votes, "ambiguity": ent}


def thin_classes(x: torch.Tensor, y: torch.Tensor, keep: dict, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep only keep[c] randomly chosen items of each class c in keep (others untouched): a
    class-imbalanced copy of (x [N, ...], y [N]). Deterministic for a given seed."""
    g = torch.Generator().manual_seed(seed)
    chosen = torch.ones(len(y), dtype=torch.bool)
    for c, k in keep.items():
        idx = (y == c).nonzero().flatten()
        if not 0 < k <= len(idx):
            raise ContractError(f"class {c} has {len(idx)} items; cannot keep {k}")
        chosen[idx] = False
        chosen[idx[torch.randperm(len(idx), generator=g)[:k]]] = True
    return x[chosen], y[chosen]


def imbalanced_blobs(n: int, minority_share: float = 0.05, distance: float = 2.0, dim: int = 2,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two overlapping Gaussian classes with KNOWN priors: y = 1 (minority) with prob minority_share,
    x ~ N((y - 1/2) distance e_1, I) in `dim` dimensions. Returns (x [n, dim], y [n] int64).
    The classes overlap, so the prior decides where the boundary goes: an unweighted mean puts it
    deep inside the minority."""
    if n < 2 or not 0 < minority_share < 1 or distance < 0 or dim < 1:
        raise ContractError(f"need n >= 2, 0 < minority_share < 1, distance >= 0, dim >= 1; got {n}, {minority_share}, {distance}, {dim}")
    y = (torch.rand(n, generator=generator) < minority_share).long()
    x = torch.randn(n, dim, generator=generator)
    x[:, 0] += (y.float() - 0.5) * distance
    return x, y


if __name__ == "__main__":  # python -m labkit.data verify | regenerate NAME | manifest
    raise SystemExit(_main())

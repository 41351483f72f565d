"""Synthetic worlds whose distributions are KNOWN, so every learned model can be scored against
the truth (the true next-token distribution, the entropy floor, the best possible accuracy)."""
from __future__ import annotations

import math

import torch

from labkit.checks import ContractError
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
            raise ContractError(f"k must be >= 1, got {k}")
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

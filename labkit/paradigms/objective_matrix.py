"""One tiny transformer, several objectives, one world: what each objective teaches, measured.

The chapter's closing map pairs a kind of data with an objective ("text tokens -> autoregressive
CE", "masked tokens -> denoising CE", "paired modalities -> contrastive", "human preferences ->
pairwise loss"). Here the same network (one TinyTransformer class, one size, one initialisation)
is trained under each objective on one shared world whose every answer is known (`SceneWorld`),
and every trained network is scored on every probe: a matrix objective x probe.

    objective      constructed input -> target                       probe (what it should teach)
    autoregressive sentence prefix -> next token                      overlap with p(x_t | x_<t)
    masked         sentence with blanks -> the hidden tokens          overlap with p(x_t | both sides)
    contrastive    two wordings of one scene -> "these match"         paraphrase retrieval top-1
    sft            question + sentence -> the answer (prompt masked)  greedy answer is right
    dpo            question + (preferred, dispreferred answer)        ranks held-out pairs right

Also the supervised-classification row of the chapter's first table: `SequenceClassifier` (a
linear head on the mean-pooled hidden states of the same transformer) and its example builder.
"""
from __future__ import annotations

import copy
import itertools
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from labkit import IGNORE
from labkit.batch import pad
from labkit.contracts import ContractError, count, finite, positive, tensor, token_ids
from labkit.models import TinyTransformer
from labkit.paradigms.autoregressive import causal_lm_loss
from labkit.paradigms.contrastive import info_nce, same_class_mask
from labkit.paradigms.masked import masked_lm_loss, random_mask
from labkit.paradigms.preference import dpo_loss, sequence_logprob
from labkit.vocab import WordTokenizer

__all__ = ["OBJECTIVES", "PROBES", "OWN_PROBE", "CAUSAL", "SceneWorld", "mean_pool", "SequenceClassifier",
           "classification_example", "collate_classification", "classification_accuracy", "new_network",
           "objective_batches", "objective_loss", "train_objective", "next_token_probs", "probe_next_token",
           "probe_fill_in", "probe_retrieval", "probe_answer", "probe_preference", "probe_all", "overlap", "PAIR_KINDS"]

OBJECTIVES = ("autoregressive", "masked", "contrastive", "sft", "dpo")
PROBES = ("next-token", "fill-in", "paraphrase retrieval", "answer", "preference")
OWN_PROBE = dict(zip(OBJECTIVES, PROBES))
# the attention mask is part of the task construction: causal for the objectives that score a
# left-to-right likelihood, bidirectional for the encoders
CAUSAL = {"autoregressive": True, "masked": False, "contrastive": False, "sft": True, "dpo": True}

# ----------------------------------------------------------------------------- the shared world

ANIMALS = (("cat", "kitten"), ("dog", "puppy"), ("bird", "chick"))
ACTIONS = (("sat", "rested"), ("ran", "dashed"), ("slept", "dozed"))
PLACES = (("mat", "carpet"), ("rug", "blanket"), ("sofa", "couch"), ("box", "crate"))
DETERMINER = ("the", "a")
PREPOSITION = ("on", "by")
QUESTIONS = ("who", "what", "where")          # ask for the animal, the action, the place
P_ANIMAL = (0.5, 0.3, 0.2)
P_ACTION = ((0.6, 0.1, 0.3), (0.2, 0.6, 0.2), (0.5, 0.3, 0.2))                          # given the animal
P_PLACE = ((0.45, 0.1, 0.35, 0.1), (0.1, 0.6, 0.1, 0.2), (0.1, 0.1, 0.3, 0.5))          # given the action
SLOTS = (2, 3, 6)                              # token positions of animal, action, place in "<bos> the cat sat on the mat <eos>"


class SceneWorld:
    """Scenes (animal, action, place) with a known joint distribution, each written in two
    registers with disjoint words: "the cat sat on the mat" / "a kitten rested by a carpet".

    Every sentence is 8 tokens, "<bos> det animal action prep det place <eos>"; the register is a
    fair coin. Two sentences of one scene in different registers are paraphrases (no content word
    in common). Because the 36 scenes x 2 registers are enumerable, every conditional a model
    could learn is computed exactly: next_token_truth (left context) and fill_truth (both sides).
    Questions "who/what/where ? <sentence>" have one right meaning; the answer is one word, in the
    question's register ("cat") or as its synonym from the other register ("kitten").
    """

    def __init__(self):
        words = list(DETERMINER) + list(PREPOSITION) + [w for group in (ANIMALS, ACTIONS, PLACES) for pair in group
                                                        for w in pair] + list(QUESTIONS) + ["?"]
        self.tokenizer = WordTokenizer(words)
        self.scenes = list(itertools.product(range(3), range(3), range(4)))
        self.scene_probs = torch.tensor([P_ANIMAL[a] * P_ACTION[a][v] * P_PLACE[v][p] for a, v, p in self.scenes],
                                        dtype=torch.float64)
        rows = [self.ids(s, r) for r in (0, 1) for s in range(len(self.scenes))]
        self.sentences = torch.tensor(rows)                                             # [72, 8]
        self.sentence_probs = torch.cat([self.scene_probs, self.scene_probs]) / 2       # [72]
        self.sentence_scene = torch.arange(len(self.scenes)).repeat(2)
        self.sentence_register = torch.arange(2).repeat_interleave(len(self.scenes))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def _scene(self, scene: int) -> tuple[int, int, int]:
        scene = count(scene, "scene", minimum=0)
        if scene >= len(self.scenes):
            raise ContractError(f"scene must lie in [0, {len(self.scenes)}), got {scene}")
        return self.scenes[scene]

    def words(self, scene: int, register: int) -> list[str]:
        """The content words (animal, action, place) of a scene in a register (0 or 1)."""
        if register not in (0, 1):
            raise ContractError(f"register must be 0 ('the cat sat on the mat') or 1 ('a kitten rested by a carpet'), got {register!r}")
        a, v, p = self._scene(scene)
        return [ANIMALS[a][register], ACTIONS[v][register], PLACES[p][register]]

    def text(self, scene: int, register: int) -> str:
        a, v, p = self.words(scene, register)
        d, on = DETERMINER[register], PREPOSITION[register]
        return f"{d} {a} {v} {on} {d} {p}"

    def ids(self, scene: int, register: int) -> list[int]:
        """<bos> sentence <eos> as ids (8 tokens)."""
        return self.tokenizer.encode(self.text(scene, register), add_bos=True, add_eos=True)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n scenes drawn from the joint, and n registers (fair coin): two [n] long tensors."""
        n = count(n, "n")
        scenes = torch.multinomial(self.scene_probs, n, replacement=True, generator=generator)
        registers = torch.randint(2, (n,), generator=generator)
        return scenes, registers

    def sentence_ids(self, scenes: torch.Tensor, registers: torch.Tensor) -> torch.Tensor:
        """[n] scenes, [n] registers -> [n, 8] ids."""
        return self.sentences[torch.as_tensor(registers) * len(self.scenes) + torch.as_tensor(scenes)]

    def _consistent(self, ids: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Probability of each of the 72 sentences given the visible tokens of one row, [72]."""
        match = (self.sentences[:, visible] == ids[visible]).all(-1)
        w = self.sentence_probs * match
        if float(w.sum()) == 0:
            raise ContractError("no sentence of this world agrees with the visible tokens")
        return w / w.sum()

    def next_token_truth(self, prefix) -> torch.Tensor:
        """p(x_t | x_<t) for a prefix of ids starting with <bos> (1 <= t <= 7): [V] float64."""
        prefix = token_ids(torch.as_tensor(prefix), "prefix", self.vocab_size).flatten()
        t = len(prefix)
        if not 1 <= t <= self.sentences.shape[1] - 1:
            raise ContractError(f"a prefix holds 1..7 tokens (<bos> first), got {t}")
        row = torch.zeros(self.sentences.shape[1], dtype=torch.long)
        row[:t] = prefix
        visible = torch.arange(self.sentences.shape[1]) < t
        w = self._consistent(row, visible)
        return torch.zeros(self.vocab_size, dtype=torch.float64).index_add_(0, self.sentences[:, t], w)

    def fill_truth(self, ids, position: int) -> torch.Tensor:
        """p(x_t | every other token of the sentence) for position t of an 8-token row: [V] float64."""
        ids = token_ids(torch.as_tensor(ids), "ids", self.vocab_size).flatten()
        if len(ids) != self.sentences.shape[1] or not 1 <= position <= 6:
            raise ContractError(f"fill_truth needs one 8-token sentence and a position in 1..6, got {len(ids)} tokens, "
                                f"position {position}")
        visible = torch.ones(len(ids), dtype=torch.bool)
        visible[position] = False
        w = self._consistent(ids, visible)
        return torch.zeros(self.vocab_size, dtype=torch.float64).index_add_(0, self.sentences[:, position], w)

    # -- instructions and preferences over the same sentences

    def prompt_ids(self, scene: int, register: int, question: int) -> list[int]:
        """"<user> who ? the cat sat on the mat <assistant>" (10 tokens)."""
        if question not in (0, 1, 2):
            raise ContractError(f"question must be 0 (who), 1 (what) or 2 (where), got {question!r}")
        text = f"<user> {QUESTIONS[question]} ? {self.text(scene, register)} <assistant>"
        return self.tokenizer.encode(text)

    def answer_ids(self, scene: int, register: int, question: int, word: str | None = None,
                   answer_register: int | None = None) -> list[int]:
        """The answer's ids with <eos>: "cat <eos>". answer_register=1 - register gives the synonym
        from the other register ("kitten <eos>": right meaning, not the question's words); word=
        puts another word in the answer's place (a wrong answer)."""
        if word is None:
            word = self.words(scene, register if answer_register is None else answer_register)[question]
        return self.tokenizer.encode(word, add_eos=True)

    def wrong_word(self, scene: int, register: int, question: int, generator: torch.Generator | None = None) -> str:
        """Another word of the same slot and register (a plausible wrong answer)."""
        group = (ANIMALS, ACTIONS, PLACES)[question]
        right = self.words(scene, register)[question]
        others = [pair[register] for pair in group if pair[register] != right]
        return others[int(torch.randint(len(others), (), generator=generator))]

    def is_right_answer(self, scene: int, register: int, question: int, response: Sequence[int]) -> bool:
        """A response (ids) is right when it is the right content word, in either register, then <eos>."""
        response = [int(i) for i in response]
        right = [self.tokenizer.encode(w, add_eos=True) for w in (self.words(scene, 0)[question], self.words(scene, 1)[question])]
        return response in right


# ----------------------------------------------------------------------------- the supervised row: sentence -> label

def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of the hidden states over real tokens: [B,T,d], mask [B,T] (1 = real) -> [B,d]."""
    hidden = tensor(hidden, "hidden")
    if hidden.dim() != 3:
        raise ContractError(f"hidden states must be [B,T,d], got {tuple(hidden.shape)}")
    if attention_mask is None:
        return hidden.mean(1)
    m = tensor(attention_mask, "attention_mask").to(hidden.dtype)
    if m.shape != hidden.shape[:2]:
        raise ContractError(f"attention_mask {tuple(m.shape)} must be [B,T] = {tuple(hidden.shape[:2])}")
    if bool((m.sum(1) == 0).any()):
        raise ContractError("a row has no real token: its mean is 0/0; fix: drop empty rows")
    return (hidden * m[..., None]).sum(1) / m.sum(1, keepdim=True)


class SequenceClassifier(nn.Module):
    """The lab's transformer with a classification head: ids [B,T] (+ attention mask) -> logits [B,K].

    logits = W mean_pool(body.hidden_states(ids)) + b. The body is any TinyTransformer (usually
    bidirectional: the label depends on the whole sentence); its token head is not used.
    """

    def __init__(self, body: TinyTransformer, n_classes: int):
        super().__init__()
        if not isinstance(body, TinyTransformer):
            raise ContractError(f"body must be a labkit TinyTransformer, got {type(body).__name__}")
        self.body = body
        self.head = nn.Linear(body.d_model, count(n_classes, "n_classes", minimum=2))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(mean_pool(self.body.hidden_states(input_ids, attention_mask), attention_mask))


def classification_example(ids: Sequence[int], label: int, n_classes: int = 2) -> dict:
    """One sentence -> dict(input_ids, label): the whole sentence is the input, one class id the target."""
    ids = [int(i) for i in ids]
    if not ids:
        raise ContractError("an empty sentence has nothing to classify; fix: drop empty records before building examples")
    label = count(label, "label", minimum=0)
    if label >= count(n_classes, "n_classes", minimum=2):
        raise ContractError(f"label must be a class id in [0, {n_classes}), got {label}; fix: map the label names to 0..K-1 "
                            "and give n_classes=K")
    return {"input_ids": ids, "label": label}


def collate_classification(examples: Sequence[dict], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Examples -> (input_ids [B,T], attention_mask [B,T], labels [B]) right-padded."""
    if not examples:
        raise ContractError("collate_classification() got no examples")
    ids, mask = pad([e["input_ids"] for e in examples], pad_id)
    return ids, mask, torch.tensor([e["label"] for e in examples])


@torch.no_grad()
def classification_accuracy(model: SequenceClassifier, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of rows whose argmax class is the label."""
    dev = next(model.parameters()).device
    return float(model(ids.to(dev), mask.to(dev)).argmax(-1).cpu().eq(labels).double().mean())


# ----------------------------------------------------------------------------- five objectives, one network

def new_network(world: SceneWorld, objective: str, seed: int, d_model: int = 32, n_layers: int = 2,
                n_heads: int = 4) -> TinyTransformer:
    """The shared network: same class, size and initial weights (seed) for every objective; only
    the attention mask (CAUSAL[objective]) differs, and it has no parameters."""
    if objective not in CAUSAL and objective != "init":
        raise ContractError(f"unknown objective {objective!r}; fix: one of {OBJECTIVES}")
    torch.manual_seed(seed)
    return TinyTransformer(world.vocab_size, d_model=d_model, n_layers=n_layers, n_heads=n_heads, max_len=16,
                           causal=CAUSAL.get(objective, True))


def _chat_rows(world: SceneWorld, n: int, generator: torch.Generator):
    scenes, registers = world.sample(n, generator)
    questions = torch.randint(3, (n,), generator=generator)
    return scenes.tolist(), registers.tolist(), questions.tolist()


def objective_batches(world: SceneWorld, objective: str, steps: int, batch_size: int,
                      generator: torch.Generator | None = None, mask_p: float = 0.25) -> list:
    """`steps` batches of `batch_size` records each, built from the world for one objective.

    autoregressive: ids [B,8]; masked: (inputs, labels) [B,8] (random_mask, p=mask_p, specials
    kept); contrastive: (register-0 ids, register-1 ids, scene ids) of B scenes; sft: dict(input_ids,
    attention_mask, labels) with the prompt masked, the right answer written in either register
    (fair coin: the demonstrators use both words); dpo: dict of 2B rows (chosen first), chosen =
    the right answer in the question's register, rejected = its synonym from the other register
    or a wrong word of the question's register (fair coin).
    """
    if objective not in OBJECTIVES:
        raise ContractError(f"unknown objective {objective!r}; fix: one of {OBJECTIVES}")
    steps, batch_size = count(steps, "steps"), count(batch_size, "batch_size")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    tok = world.tokenizer
    out = []
    for _ in range(steps):
        if objective in ("autoregressive", "masked"):
            ids = world.sentence_ids(*world.sample(batch_size, g))
            out.append(ids if objective == "autoregressive" else
                       random_mask(ids, mask_p, tok.mask_id, special_ids=(tok.bos_id, tok.eos_id), generator=g))
        elif objective == "contrastive":
            scenes, _ = world.sample(batch_size, g)
            out.append((world.sentence_ids(scenes, torch.zeros_like(scenes)), world.sentence_ids(scenes, torch.ones_like(scenes)),
                        scenes))
        elif objective == "sft":
            rows, labels = [], []
            for s, r, q in zip(*_chat_rows(world, batch_size, g)):
                said = int(torch.randint(2, (), generator=g))
                prompt, answer = world.prompt_ids(s, r, q), world.answer_ids(s, r, q, answer_register=said)
                rows.append(prompt + answer)
                labels.append([IGNORE] * len(prompt) + answer)
            ids, mask = pad(rows, tok.pad_id)
            out.append({"input_ids": ids, "attention_mask": mask, "labels": pad(labels, IGNORE)[0]})
        else:
            chosen, rejected = [], []
            for s, r, q in zip(*_chat_rows(world, batch_size, g)):
                prompt = world.prompt_ids(s, r, q)
                if bool(torch.randint(2, (), generator=g)):
                    bad = world.answer_ids(s, r, q, answer_register=1 - r)
                else:
                    bad = world.answer_ids(s, r, q, word=world.wrong_word(s, r, q, g))
                chosen.append((prompt, world.answer_ids(s, r, q)))
                rejected.append((prompt, bad))
            pairs = chosen + rejected
            ids, mask = pad([p + a for p, a in pairs], tok.pad_id)
            response, _ = pad([[0] * len(p) + [1] * len(a) for p, a in pairs], 0)
            out.append({"input_ids": ids, "attention_mask": mask, "response_mask": response})
    return out


def objective_loss(objective: str, reference: nn.Module | None = None, temperature: float = 0.1, beta: float = 0.5):
    """loss_fn(model, batch) for labkit.train.fit, one per objective (labkit's own losses):
    causal_lm_loss, masked_lm_loss, info_nce (symmetric, same-scene pairs masked as false
    negatives, mean-pooled hidden states), completion CE (causal_lm_loss on prompt-masked labels),
    dpo_loss against a frozen `reference` (required for "dpo")."""
    if objective not in OBJECTIVES:
        raise ContractError(f"unknown objective {objective!r}; fix: one of {OBJECTIVES}")
    temperature, beta = positive(temperature, "temperature"), positive(beta, "beta")
    if objective == "dpo" and reference is None:
        raise ContractError("dpo needs a frozen reference model (its log-probs are the baseline of the implicit reward); "
                            "fix: reference=copy of the initial network")

    def loss_fn(model, batch):
        if objective == "autoregressive":
            return causal_lm_loss(model(batch), batch)
        if objective == "masked":
            return masked_lm_loss(model, *batch)
        if objective == "contrastive":
            a, b, scenes = batch
            za, zb = mean_pool(model.hidden_states(a)), mean_pool(model.hidden_states(b))
            return info_nce(za, zb, temperature, symmetric=True, false_negative_mask=same_class_mask(scenes))
        if objective == "sft":
            return causal_lm_loss(model(batch["input_ids"], batch["attention_mask"]), batch["labels"])
        ids, mask, resp = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
        logp = sequence_logprob(model(ids, mask), ids, resp)
        with torch.no_grad():
            ref = sequence_logprob(reference(ids, mask), ids, resp)
        n = len(ids) // 2
        return dpo_loss(logp[:n], logp[n:], ref[:n], ref[n:], beta=beta)
    return loss_fn


def train_objective(world: SceneWorld, objective: str, seed: int, steps: int = 200, batch_size: int = 32,
                    lr: float = 3e-3, **net) -> TinyTransformer:
    """Train the shared network under one objective: same init (seed), steps, batch size and lr for
    every objective; objective "init" returns the untrained network (the control row). The
    data stream is seeded by `seed` too. The DPO reference is the frozen initial network."""
    from labkit.train import fit

    model = new_network(world, objective, seed, **net)
    if objective == "init":
        return model.eval()
    batches = objective_batches(world, objective, steps, batch_size, torch.Generator().manual_seed(seed + 1000))
    reference = copy.deepcopy(model).eval() if objective == "dpo" else None
    fit(model, batches, objective_loss(objective, reference), steps=steps, lr=lr, progress=False, desc=objective)
    return model.eval()


# ----------------------------------------------------------------------------- probes (every network, every probe)

@torch.no_grad()
def next_token_probs(model: TinyTransformer, prefixes: torch.Tensor, mask_id: int) -> torch.Tensor:
    """p(x_t | x_<t) as the network answers it, for prefixes [N,t] -> [N,V].

    A causal network reads its last position. A bidirectional one is asked the masked-LM way: the
    prefix plus one <mask>, read at the mask (nothing to its right is visible to either)."""
    prefixes = token_ids(prefixes, "prefixes")
    if prefixes.dim() != 2:
        raise ContractError(f"prefixes must be [N,t], got {tuple(prefixes.shape)}")
    dev = next(model.parameters()).device
    x = prefixes.to(dev)
    if not model.causal:
        x = torch.cat([x, torch.full((len(x), 1), mask_id, device=dev)], 1)
    return model(x)[:, -1].softmax(-1).cpu()


def overlap(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """sum_k min(p_k, q_k) = 1 - TV(p, q) per row: the probability mass two distributions share (1 = equal)."""
    if p.shape != q.shape:
        raise ContractError(f"overlap needs two distributions of one shape, got {tuple(p.shape)} and {tuple(q.shape)}")
    return torch.minimum(p.double(), q.double()).sum(-1)


def _probe_rows(world: SceneWorld, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scenes, registers = world.sample(n, g)
    return world.sentence_ids(scenes, registers), torch.tensor(SLOTS + (1,))[torch.randint(4, (n,), generator=g)]


@torch.no_grad()
def probe_next_token(model, world: SceneWorld, n: int = 240, seed: int = 123) -> float:
    """Mean overlap (1 - TV) between the network's p(x_t | x_<t) and the true one, over n sampled
    sentences, at a random undetermined position each (the determiner or a content word)."""
    rows, pos = _probe_rows(world, count(n, "n"), seed)
    scores = []
    for t in pos.unique().tolist():
        r = rows[pos == t]
        truth = torch.stack([world.next_token_truth(x[:t]) for x in r])
        scores.append(overlap(next_token_probs(model, r[:, :t], world.tokenizer.mask_id), truth))
    return float(torch.cat(scores).mean())


@torch.no_grad()
def probe_fill_in(model, world: SceneWorld, n: int = 240, seed: int = 124) -> float:
    """Mean overlap between the network's answer for a blanked token and p(x_t | both sides), over
    n sampled sentences, one blank each (determiner or content word). A causal network answers
    at t-1 (it cannot see the right side); a bidirectional one at the <mask>."""
    rows, pos = _probe_rows(world, count(n, "n"), seed)
    dev = next(model.parameters()).device
    blanked = rows.clone()
    idx = torch.arange(len(rows))
    blanked[idx, pos] = world.tokenizer.mask_id
    truth = torch.stack([world.fill_truth(x, int(t)) for x, t in zip(rows, pos)])
    logits = model(blanked.to(dev)).cpu()
    read = pos - 1 if model.causal else pos
    return float(overlap(logits[idx, read].softmax(-1), truth).mean())


@torch.no_grad()
def probe_retrieval(model, world: SceneWorld) -> float:
    """Paraphrase retrieval: each of the 36 scenes in register 0 retrieves, by cosine of mean-pooled
    hidden states, among the 36 scenes in register 1 (and back); top-1 is right when it is the same
    scene. Mean of both directions (chance 1/36)."""
    dev = next(model.parameters()).device
    n = len(world.scenes)
    z = F.normalize(mean_pool(model.hidden_states(world.sentences.to(dev))).cpu(), dim=-1)
    s = z[:n] @ z[n:].T
    target = torch.arange(n)
    return float((s.argmax(1).eq(target).double().mean() + s.argmax(0).eq(target).double().mean()) / 2)


def _chat_probe_rows(world: SceneWorld, n: int, seed: int):
    return _chat_rows(world, n, torch.Generator().manual_seed(seed))


@torch.no_grad()
def probe_answer(model, world: SceneWorld, n: int = 240, seed: int = 125, max_new_tokens: int = 3) -> float:
    """Share of n sampled questions the network answers right with greedy decoding (the content
    word, with or without its determiner, then <eos>). Every prompt has 10 tokens."""
    scenes, registers, questions = _chat_probe_rows(world, count(n, "n"), seed)
    x = torch.tensor([world.prompt_ids(s, r, q) for s, r, q in zip(scenes, registers, questions)])
    for _ in range(max_new_tokens):
        x = torch.cat([x, next_token_probs(model, x, world.tokenizer.mask_id).argmax(-1, keepdim=True)], 1)
    right = []
    for row, s, r, q in zip(x[:, 10:].tolist(), scenes, registers, questions):
        eos = world.tokenizer.eos_id
        right.append(world.is_right_answer(s, r, q, row[: row.index(eos) + 1] if eos in row else row))
    return sum(right) / len(right)


@torch.no_grad()
def _response_logprob(model, prompts: torch.Tensor, responses: list[list[int]], mask_id: int, pad_id: int) -> torch.Tensor:
    """log p(response | prompt) per row, token by token through next_token_probs (works for causal
    and bidirectional networks alike): prompts [N,P] (one length), responses lists -> [N]."""
    if model.causal:
        ids, attn = pad([p + r for p, r in zip(prompts.tolist(), responses)], pad_id)
        resp, _ = pad([[0] * prompts.shape[1] + [1] * len(r) for r in responses], 0)
        dev = next(model.parameters()).device
        return sequence_logprob(model(ids.to(dev), attn.to(dev)), ids.to(dev), resp.to(dev)).cpu()
    total = torch.zeros(len(responses), dtype=torch.float64)
    for j in range(max(len(r) for r in responses)):
        rows = [i for i, r in enumerate(responses) if len(r) > j]
        prefix = torch.tensor([prompts[i].tolist() + responses[i][:j] for i in rows])
        p = next_token_probs(model, prefix, mask_id)
        total[rows] += p[torch.arange(len(rows)), torch.tensor([responses[i][j] for i in rows])].double().clamp_min(1e-30).log()
    return total


PAIR_KINDS = ("both", "register", "content")


@torch.no_grad()
def probe_preference(model, world: SceneWorld, n: int = 240, seed: int = 126, kind: str = "both") -> float:
    """Share of n held-out preference pairs the network ranks right: log p(preferred | prompt) >
    log p(dispreferred | prompt). Preferred: the right answer in the question's register;
    dispreferred: its synonym from the other register (kind="register"), a wrong word of the
    question's register (kind="content"), or half each ("both"). Every answer is one word and
    <eos>, so length plays no part."""
    n = count(n, "n")
    if kind not in PAIR_KINDS:
        raise ContractError(f"unknown pair kind {kind!r}; fix: one of {PAIR_KINDS}")
    g = torch.Generator().manual_seed(seed)
    scenes, registers, questions = _chat_rows(world, n, g)
    prompts = torch.tensor([world.prompt_ids(s, r, q) for s, r, q in zip(scenes, registers, questions)])
    good, bad = [], []
    for i, (s, r, q) in enumerate(zip(scenes, registers, questions)):
        good.append(world.answer_ids(s, r, q))
        synonym = kind == "register" or (kind == "both" and i % 2 == 0)
        bad.append(world.answer_ids(s, r, q, answer_register=1 - r) if synonym else
                   world.answer_ids(s, r, q, word=world.wrong_word(s, r, q, g)))
    tok = world.tokenizer
    lg = _response_logprob(model, prompts, good, tok.mask_id, tok.pad_id)
    lb = _response_logprob(model, prompts, bad, tok.mask_id, tok.pad_id)
    return float(lg.gt(lb).double().mean())


def probe_all(model, world: SceneWorld) -> dict:
    """Every probe on one network: {probe name: score in [0, 1], higher = better}."""
    return {"next-token": probe_next_token(model, world), "fill-in": probe_fill_in(model, world),
            "paraphrase retrieval": probe_retrieval(model, world), "answer": probe_answer(model, world),
            "preference": probe_preference(model, world)}

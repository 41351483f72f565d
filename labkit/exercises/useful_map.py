"""Exercise graders for notebook 14 (labkit.paradigms.objective_matrix).

Each check_*(fn) calls a learner's function on fixed cases and raises AssertionError naming the misconception."""
from __future__ import annotations

from typing import Callable

import torch

from labkit.exercises.common import close, fail, require_tensor
from labkit.paradigms.objective_matrix import SceneWorld

# prefixes whose next token is uncertain: the register, the animal, the action, the place
_PREFIXES = ("<bos>", "<bos> the", "<bos> a", "<bos> the cat", "<bos> the dog", "<bos> a chick",
             "<bos> the cat sat on the", "<bos> a puppy dashed by a", "<bos> the bird slept on")


def check_next_token_truth(fn: Callable, world: SceneWorld | None = None) -> None:
    """Grade fn(world, prefix_ids) -> [V] tensor: the true p(x_t | x_<t) of the SceneWorld, by
    enumerating its sentences (weight of every sentence that starts with the prefix, summed per
    next token, normalised)."""
    world = world or SceneWorld()
    tok = world.tokenizer
    for text in _PREFIXES:
        prefix = tok.encode(text)
        want = world.next_token_truth(prefix)
        got = require_tensor(fn(world, list(prefix)), "your function")
        if got.shape != want.shape:
            fail(f"return one probability per vocabulary entry, shape {tuple(want.shape)}; got {tuple(got.shape)}")
        got = got.detach().double()
        if close(got, want, atol=1e-6):
            continue
        t = len(prefix)
        consistent = (world.sentences[:, :t] == torch.tensor(prefix)).all(-1)
        mass = torch.zeros_like(want).index_add_(0, world.sentences[:, t], world.sentence_probs * consistent)
        uniform = torch.zeros_like(want).index_add_(0, world.sentences[:, t], consistent.double())
        at_t_minus_1 = torch.zeros_like(want).index_add_(0, world.sentences[:, t - 1], world.sentence_probs * consistent)
        every = torch.zeros_like(want).index_add_(0, world.sentences[:, t], world.sentence_probs)
        wrong = {
            "the weights of the consistent sentences must be divided by their total (a distribution sums to 1)": mass,
            "weight each consistent sentence by its probability (world.sentence_probs), not equally": uniform / uniform.sum(),
            "the next token of a prefix of length t sits at column t (0-based), not t-1": at_t_minus_1 / at_t_minus_1.sum(),
            "keep only the sentences that start with the prefix: this is the marginal at position t": every / every.sum(),
        }
        for why, value in wrong.items():
            if close(got, value, atol=1e-6):
                fail(f"after {text!r}: {why}")
        fail(f"after {text!r} the true next-token distribution puts "
             + ", ".join(f"{tok.token(i)}: {want[i]:.3f}" for i in want.nonzero().flatten().tolist())
             + ". Recipe: keep the sentences whose first t tokens equal the prefix, add their probabilities per token at "
               "column t, divide by the total")


def check_fill_truth(fn: Callable, world: SceneWorld | None = None) -> None:
    """Grade fn(world, ids, position) -> [V] tensor: the true p(x_t | every other token) of an
    8-token SceneWorld sentence, by enumeration (sentences that agree on every visible position)."""
    world = world or SceneWorld()
    tok = world.tokenizer
    for scene, register, position in ((0, 0, 3), (7, 1, 2), (13, 0, 6), (30, 1, 3), (22, 0, 1)):
        ids = world.ids(scene, register)
        want = world.fill_truth(ids, position)
        got = require_tensor(fn(world, list(ids), position), "your function")
        if got.shape != want.shape:
            fail(f"return one probability per vocabulary entry, shape {tuple(want.shape)}; got {tuple(got.shape)}")
        got = got.detach().double()
        if close(got, want, atol=1e-6):
            continue
        what = f"the blank at position {position} of {tok.decode(ids)!r}"
        if close(got, world.next_token_truth(ids[:position]), atol=1e-6):
            fail(f"{what}: you used the left side only (the next-token truth); a blank is read from both sides: keep the "
                 "sentences that agree on every position except the blank")
        visible = torch.ones(len(ids), dtype=torch.bool)
        visible[position] = False
        agree = (world.sentences[:, visible] == torch.tensor(ids)[visible]).all(-1)
        mass = torch.zeros_like(want).index_add_(0, world.sentences[:, position], world.sentence_probs * agree)
        if close(got, mass, atol=1e-6):
            fail(f"{what}: divide by the total weight of the agreeing sentences (a distribution sums to 1)")
        uniform = torch.zeros_like(want).index_add_(0, world.sentences[:, position], agree.double())
        if close(got, uniform / uniform.sum(), atol=1e-6):
            fail(f"{what}: weight each agreeing sentence by its probability (world.sentence_probs), not equally")
        fail(f"{what}: the truth puts " + ", ".join(f"{tok.token(i)}: {want[i]:.3f}" for i in want.nonzero().flatten().tolist())
             + ". Recipe: keep the sentences equal to ids everywhere but the blank, add their probabilities per token at "
               "the blank, divide by the total")

"""Bad inputs refused by labkit.paradigms.policy (notebook 11b), in the format of tests/bad_inputs.py:
each case is the call, as text, evaluated in NAMESPACE; each must raise ContractError."""
import torch

from labkit.models import TinyCausalLM
from labkit.paradigms.policy import (best_of_n_indices, clipped_surrogate_loss, distinct_per_group, every, ipo_loss, kl_penalty,
                                     mean_margin, mean_pairwise_cosine, pair_loss_fn, read_at_kl,
                                     rollout_gradients, sft_fit)
from labkit.paradigms.preference import dpo_loss

lp = torch.tensor([-1.0, -2.0])
adv = torch.tensor([0.5, -0.5])

model = TinyCausalLM(16, d_model=8, n_layers=1, n_heads=2, max_len=8)
ref_data = {"pairs": [{}], "ref_chosen": lp, "ref_rejected": lp}

NAMESPACE = dict(globals())

CASES = [
    # the old log-probs carry a gradient: they are constants of the sampling step
    "clipped_surrogate_loss(lp, lp.clone().requires_grad_(True), adv)",
    "clipped_surrogate_loss(lp, lp, adv, clip=1.5)",
    "clipped_surrogate_loss(lp, lp, adv, reduction='token_mean')",
    "clipped_surrogate_loss(lp, lp, torch.tensor([0.5, -0.5, 1.0]))",
    "kl_penalty(lp, torch.tensor([0.3, -1.0]))",
    "kl_penalty(lp, lp, estimator='k2')",
    "ipo_loss(lp, lp, lp, lp, tau=0.0)",
    "ipo_loss(lp, lp, lp.clone().requires_grad_(True), lp)",
    "best_of_n_indices(torch.tensor([1.0, 2.0, 3.0]), 2)",
    "best_of_n_indices(torch.tensor([1.0, float('nan')]), 2)",
    "distinct_per_group([[1], [2], [3]], 2)",
    "read_at_kl([{'kl': 0.0, 'true': 0.0}, {'kl': 1.0, 'true': 0.5}], 2.0, 'true')",
    "mean_pairwise_cosine(torch.ones(1, 4))",
    # SFT needs examples with the prompt masked; a pair loss needs a positive coefficient and reference log-probs
    "sft_fit(model, [], 0, steps=3)",
    "sft_fit(model, [{'input_ids': [1, 2, 3]}], 0, steps=3)",
    "pair_loss_fn(dpo_loss, ref_data, 0.0)",
    "pair_loss_fn(dpo_loss, {'pairs': [{}]}, 0.1)",
    "mean_margin(model, {'pairs': []}, 0)",
    "every(0, len, [])",
    "rollout_gradients(model, None, ['A ?'], len, {}, torch.Generator())",
]

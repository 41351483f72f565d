"""Bad inputs for labkit.paradigms.onpolicy (merged into tests/bad_inputs.py by the lead): each call raises ContractError."""
import torch

from labkit.data import RunningSumTask
from labkit.models import TinyCausalLM
from labkit.paradigms.onpolicy import (PlantedErrorTeacher, counting_context, distillation_loss, sample_rollouts,
                                       token_kl)
from labkit.vocab import WordTokenizer

counting_tok = WordTokenizer([str(d) for d in range(10)])
counting_task = RunningSumTask(n_steps=4, tokenizer=counting_tok)
lm = TinyCausalLM(len(counting_tok), d_model=8, n_layers=1, n_heads=2, max_len=12)
z = torch.zeros(2, 3, 5)

NAMESPACE = dict(globals())

CASES = [
    "token_kl(z, z, torch.ones(2, 3), direction='backward')",
    "token_kl(z, z, torch.zeros(2, 3))",
    "token_kl(z, z, torch.full((2, 3), -100))",
    "token_kl(z, torch.zeros(2, 3, 6), torch.ones(2, 3))",
    "sample_rollouts(lm, torch.zeros(2, 3, dtype=torch.long), 4, temperature=-1.0)",
    "sample_rollouts(lm, torch.zeros(2, 3), 4)",
    "distillation_loss(lm, lm, torch.zeros(2, 3, dtype=torch.long), 4, policy='both')",
    "PlantedErrorTeacher(lm, 'prev=4', 3)",
    "counting_context(counting_task, counting_task.sample(2), prev=4, increment=7)",
]

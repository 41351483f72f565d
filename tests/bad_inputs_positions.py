"""Bad inputs for rotary positions (labkit.models; merged into tests/bad_inputs.py by the lead): each call raises ContractError."""
import torch

from labkit.models import TinyCausalLM, apply_rope, rope_cos_sin

NAMESPACE = dict(globals())

CASES = [
    "TinyCausalLM(16, d_model=8, n_heads=2, positions='alibi')",
    "TinyCausalLM(16, d_model=6, n_heads=2, positions='rope')",
    "apply_rope(torch.randn(1, 2, 3, 4), torch.arange(4)[None])",
    "apply_rope(torch.randn(1, 2, 3, 4).long(), torch.arange(3)[None])",
    "rope_cos_sin(torch.arange(3)[None], head_dim=5)",
    "TinyCausalLM(16, d_model=8, n_heads=2, positions='rope', rope_base=0)",
]

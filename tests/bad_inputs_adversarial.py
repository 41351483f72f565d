"""The inputs each public function of labkit.paradigms.adversarial and labkit.paradigms.corruption refuses
(format of tests/bad_inputs.py: each case is the call as text, evaluated in NAMESPACE, and must raise
ContractError)."""
import torch

from labkit.paradigms.adversarial import (gan_fit, generator_loss, make_discriminator, make_generator, mmd_rbf,
                                          mode_coverage, ring_centers, ring_of_gaussians)
from labkit.paradigms.corruption import close_up, compact_vocabulary, corrupt, denoise_loss

G, D = make_generator(), make_discriminator()
real = lambda n, g: ring_of_gaussians(n, generator=g)  # noqa: E731
rows = torch.tensor([[5, 6, 7, 8]])

NAMESPACE = dict(globals())

CASES = [
    "generator_loss(torch.zeros(4), kind='wasserstein')",
    "generator_loss(torch.tensor([1, 0, 1]))",
    "mmd_rbf(torch.zeros(5, 2), torch.zeros(5, 3))",
    "mode_coverage(torch.zeros(10, 2), ring_centers(), std=0.0)",
    "ring_of_gaussians(0)",
    "gan_fit(G, D, real, 10, train_discriminator=False, train_generator=False)",
    "corrupt('shuffle', rows, 0.1, mask_id=1, pad_id=0, pool=[5, 6])",
    "corrupt('mask', rows, 1.5, mask_id=1, pad_id=0, pool=[5, 6])",
    "corrupt('mask', torch.tensor([5, 6, 7]), 0.1, mask_id=1, pad_id=0, pool=[5, 6])",
    "close_up(rows, torch.tensor([[1, 0, 0, 0]]), 0)",
    "compact_vocabulary([3, 700], 512)",
]

"""The inputs each public function of labkit.paradigms.objective_matrix refuses (format of tests/bad_inputs.py:
each case is the call as text, evaluated in NAMESPACE, and must raise ContractError)."""
import torch

from labkit.paradigms.objective_matrix import (SceneWorld, SequenceClassifier, classification_example, mean_pool,
                                               new_network, objective_batches, objective_loss, overlap,
                                               probe_preference)

scene_world = SceneWorld()

NAMESPACE = dict(globals())

CASES = [
    "classification_example([], 0)",
    "classification_example([1, 2, 3], 2, n_classes=2)",
    "SequenceClassifier(torch.nn.Linear(4, 4), n_classes=2)",
    "mean_pool(torch.zeros(2, 3, 4), torch.zeros(2, 3))",
    "mean_pool(torch.zeros(2, 3), None)",
    "scene_world.next_token_truth([1] * 9)",
    "scene_world.fill_truth(scene_world.ids(0, 0), 7)",
    "scene_world.answer_ids(0, 2, 0)",
    "objective_batches(scene_world, 'clip', steps=1, batch_size=2)",
    "objective_loss('dpo')",
    "new_network(scene_world, 'gan', seed=0)",
    "overlap(torch.ones(3) / 3, torch.ones(4) / 4)",
    "probe_preference(new_network(scene_world, 'sft', 0), scene_world, kind='length')",
]

# hard-negative mining (labkit.paradigms.contrastive, notebook 09)
from labkit.paradigms.contrastive import DuplicateCatalogue, mine_negatives, mined_info_nce  # noqa: E402

catalogue = DuplicateCatalogue(seed=0, categories=2, products_per_category=2, listings_per_product=2)
NAMESPACE.update(DuplicateCatalogue=DuplicateCatalogue, mine_negatives=mine_negatives, mined_info_nce=mined_info_nce,
                 catalogue=catalogue)
CASES += [
    "DuplicateCatalogue(categories='32')",
    "catalogue.queries(torch.tensor([9]))",
    "mine_negatives(torch.zeros(2, 5), torch.tensor([0, 1]), n_neg=4, k=2)",
    "mine_negatives(torch.zeros(2, 5), torch.tensor([0, 7]), n_neg=1, k=2)",
    "mined_info_nce(torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6), 0.1)",
]

"""Bad inputs for the two fine-tuning panels' runs (labkit.widgets.learned_finetune) and the DPO panel's
slider stops (merged into tests/bad_inputs.py by the lead): each call raises ContractError before training."""
from labkit.widgets import DPOWeightsPanel
from labkit.widgets.learned import state_key
from labkit.widgets.learned_finetune import run_dpo, run_scheduled_sampling

NAMESPACE = dict(globals())

CASES = [
    "run_dpo('0.2/sum', seed=0)",
    "run_scheduled_sampling('linear/1.00', seed=0)",
    "DPOWeightsPanel(beta=0.2)",
    "state_key('dpo_weights', beta=0.3, reduction='sum')",
]

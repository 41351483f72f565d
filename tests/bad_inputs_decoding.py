"""The inputs each public function of labkit.paradigms.decoding refuses (format of tests/bad_inputs.py:
each case is the call as text, evaluated in NAMESPACE, and must raise ContractError)."""
import torch

from labkit.paradigms.decoding import (ConditionalTokens, IdPredictor, KnownChain, beam_search, best_gaussian_over_ids,
                                       count_outside_top_p, decode, gaussian_over_ids, length_distribution,
                                       mode_shortfall, relaxed_grads, score_function_grads, top_k_filter, top_p_filter)

chain = KnownChain(["<bos>", "<eos>", "a"], {"<bos>": {"a": 1.0}, "a": {"a": 0.5, "<eos>": 0.5}}, max_len=3)

NAMESPACE = dict(globals())

CASES = [
    "KnownChain(['<bos>', '<eos>', 'a'], {'<bos>': {'a': 1.0}}, max_len=3)",
    "KnownChain(['<bos>', '<eos>', 'a'], {'<bos>': {'a': 0.5}, 'a': {'<eos>': 1.0}}, max_len=3)",
    "chain.logprob([[2, 1, 2]])",
    "chain.step(torch.tensor([[0.0, 2.0]]))",
    "decode(chain.step, 4, 3, chain.bos_id, chain.eos_id, temperature=-1)",
    "decode(chain.step, '4', 3, chain.bos_id, chain.eos_id)",
    "beam_search(chain.step, 0, 3, chain.bos_id, chain.eos_id)",
    "top_p_filter(torch.zeros(4), 1.5)",
    "top_k_filter(torch.zeros(4), 0)",
    "ConditionalTokens([{0: 0.5, 9: 0.5}], n_tokens=5)",
    "ConditionalTokens([{0: 0.5, 1: 0.2}], n_tokens=5)",
    "IdPredictor(3, 5, head='ordinal')",
    "gaussian_over_ids(torch.tensor([1.0, 2.0]), 0.0, 5)",
    "length_distribution([[2, 2, 2, 2]], max_len=3)",
    "score_function_grads(torch.zeros(3), torch.tensor([5]), torch.tensor([1.0]))",
    "score_function_grads(torch.zeros(3), torch.tensor([0, 1]), torch.tensor([1.0]))",
    "relaxed_grads(torch.zeros(3), lambda y: y.sum(-1), 4, 'gumbel')",
    "relaxed_grads(torch.zeros(3), lambda y: y.sum(-1), 4, 'gumbel_softmax', tau=0)",
    "best_gaussian_over_ids(torch.tensor([0.5, 0.5]))",
    "best_gaussian_over_ids(torch.tensor([[0.5, 0.7]]))",
    "mode_shortfall([])",
    "mode_shortfall([chain], beam_size=0)",
    "count_outside_top_p(chain.step, [[2, 1]], chain.bos_id, 0.0)",
]

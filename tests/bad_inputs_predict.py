"""Bad inputs for labkit.predict (merged into tests/bad_inputs.py by the lead): each call raises ContractError."""
from labkit.predict import ask, reveal

NAMESPACE = dict(globals())

CASES = [
    "ask('01.q', 'Which?', choices=['only one'])",
    "ask('01.q', 'How much?', number=(1.0, 0.0, 0.1))",
    "reveal(ask('01.q', 'Which?', choices=['a', 'b']), 'c')",
    "reveal(ask('01.q', 'How much?', number=(0, 1, 0.1)), '0.5')",
]

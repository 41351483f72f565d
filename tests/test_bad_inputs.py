"""Every public function refuses bad input with a ContractError; README's table is generated from these cases
(tests/bad_inputs.py and one tests/bad_inputs_<topic>.py per newer module)."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bad_input_table  # noqa: E402

from labkit.contracts import ContractError  # noqa: E402

CASES = bad_input_table.all_cases()


@pytest.mark.parametrize("case,namespace", [(c, ns) for c, ns, _ in CASES], ids=[c[:60] for c, _, _ in CASES])
def test_refused_with_a_contract_error(case, namespace):
    with pytest.raises(ContractError) as err:
        eval(case, dict(namespace))  # noqa: S307
    message = str(err.value)
    assert len(message) > 30, "the message should explain the contract and the fix"


def test_readme_table_is_generated_from_the_cases():
    readme = (ROOT / "README.md").read_text()
    assert bad_input_table.replace_in_readme(readme, bad_input_table.table()) == readme, \
        "README's bad-input table is stale: run `python tools/bad_input_table.py --write`"

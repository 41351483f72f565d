"""Every public function refuses bad input with a ContractError; README's table is generated from these cases."""
import sys
from pathlib import Path

import pytest

import bad_inputs
from labkit.checks import ContractError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


@pytest.mark.parametrize("case", bad_inputs.CASES)
def test_refused_with_a_contract_error(case):
    with pytest.raises(ContractError) as err:
        eval(case, dict(bad_inputs.NAMESPACE))  # noqa: S307
    message = str(err.value)
    assert len(message) > 30, "the message should explain the contract and the fix"


def test_readme_table_is_generated_from_the_cases():
    import bad_input_table

    readme = (ROOT / "README.md").read_text()
    assert bad_input_table.replace_in_readme(readme, bad_input_table.table()) == readme, \
        "README's bad-input table is stale: run `python tools/bad_input_table.py --write`"

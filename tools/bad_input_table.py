"""Render the README's bad-input table from tests/bad_inputs.py (the cases the tests run).

    python tools/bad_input_table.py            # print the table
    python tools/bad_input_table.py --write    # replace it in README.md between its markers
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"


def first_sentence(message: str, limit: int = 150) -> str:
    text = message.split(". Fix:")[0].split("; fix:")[0].split("; Fix:")[0]
    return (text[: limit - 1] + "…") if len(text) > limit else text


def sources() -> list:
    """Every case file: tests/bad_inputs.py and tests/bad_inputs_<topic>.py, as imported modules (CASES, NAMESPACE)."""
    sys.path.insert(0, str(ROOT / "tests"))
    names = ["bad_inputs"] + sorted(p.stem for p in (ROOT / "tests").glob("bad_inputs_*.py"))
    return [importlib.import_module(n) for n in names]


def all_cases() -> list[tuple[str, dict, object]]:
    """(case, namespace, module) for every case of every case file."""
    return [(case, mod.NAMESPACE, mod) for mod in sources() for case in mod.CASES]


def table() -> str:
    from labkit.contracts import ContractError

    rows = ["| call | refused because |", "|---|---|"]
    for case, namespace, mod in all_cases():
        try:
            eval(case, dict(namespace))  # noqa: S307 - our own fixed cases
        except ContractError as err:
            files = str(getattr(mod, "FILES", "\0"))   # temporary files: show their names, not the folder
            message = first_sentence(str(err).replace(files + "/", "").replace(files, "tmp")).replace("|", "\\|")
        else:
            raise SystemExit(f"{case} did not raise ContractError")
        rows.append(f"| `{case.replace('|', chr(92) + '|')}` | {message} |")
    return "\n".join(rows)


def replace_in_readme(text: str, rendered: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"README.md lacks the markers {START} / {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{rendered}\n{END}{tail}"


if __name__ == "__main__":
    rendered = table()
    if "--write" in sys.argv:
        readme = ROOT / "README.md"
        readme.write_text(replace_in_readme(readme.read_text(), rendered))
    else:
        print(rendered)

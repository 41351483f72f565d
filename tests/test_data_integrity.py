"""data/: manifest checksums, a clear error for a missing or corrupted file, reproducible generators."""
import shutil
import subprocess
import sys

import pytest

from labkit.checks import ContractError
from labkit.datafiles import DATA_DIR, GENERATORS, generate, load_manifest, regenerate, sha256, verify


def test_shipped_files_match_the_manifest():
    assert set(verify()) == set(GENERATORS)
    out = subprocess.run([sys.executable, "-m", "labkit.data", "verify"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.count("ok") == len(GENERATORS)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_reproduce_the_committed_files(name, tmp_path):
    assert generate(name, tmp_path / name) == load_manifest()[name]["sha256"] == sha256(DATA_DIR / name)


def test_missing_and_corrupted_files_are_named_with_the_fix(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data)
    name, other = sorted(GENERATORS)[:2]
    (data / name).unlink()
    with (data / other).open("a") as f:
        f.write("tampered\n")
    with pytest.raises(ContractError) as err:
        verify(data)
    msg = str(err.value)
    assert f"{name} is missing" in msg and f"{other} is corrupted" in msg
    assert f"python -m labkit.data regenerate {name}" in msg
    with pytest.raises(ContractError, match="someone's edits"):
        regenerate(other, data)                        # an edited file is not replaced silently
    regenerate(name, data)
    regenerate(other, data, force=True)
    assert set(verify(data)) == set(GENERATORS)


def test_loaders_name_the_line_of_malformed_json(tmp_path):
    from labkit.data import load_instructions
    from labkit.paradigms.preference import load_preferences

    for loader, name in [(load_instructions, "instructions.jsonl"), (load_preferences, "preferences.jsonl")]:
        bad = tmp_path / name
        lines = (DATA_DIR / name).read_text().splitlines()[:3]
        bad.write_text("\n".join([lines[0], "{not json", lines[2]]) + "\n")
        with pytest.raises(ContractError, match=f"{name} line 2: malformed JSON"):
            loader(bad)
        with pytest.raises(ContractError, match="not found"):
            loader(tmp_path / "missing.jsonl")

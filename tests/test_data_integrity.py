"""data/: manifest checksums, a clear error for a missing or corrupted file, reproducible generators,
byte-stable clones, and the copy a non-editable install ships."""
import os
import shutil
import subprocess
import sys

from pathlib import Path

import pytest

from labkit.checks import ContractError
from labkit.datafiles import DATA_DIR, GENERATORS, generate, load_manifest, regenerate, sha256, verify


def test_shipped_files_match_the_manifest():
    assert set(verify()) == set(GENERATORS)
    out = subprocess.run([sys.executable, "-m", "labkit.data", "verify"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.count("ok") == len(GENERATORS)


# Regenerating a panel file retrains every state of its panel (minutes for all seven): `make test` re-runs
# sample states of every panel instead (tests/test_panel_data.py); `make test-data` (run by CI) regenerates all.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.regen) if n.startswith("panels/") else n
                                  for n in sorted(GENERATORS)])
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
    assert f"python -m labkit.data regenerate {other} --force" in msg   # the advice for an edited file works
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


ROOT = Path(__file__).resolve().parents[1]


def _committed(path: str) -> bool:
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--error-unmatch", path], capture_output=True)
    return out.returncode == 0


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="not a git checkout")
def test_a_clone_with_autocrlf_keeps_the_data_byte_identical(tmp_path):
    """Windows users clone with core.autocrlf=true; .gitattributes keeps data/ out of eol conversion."""
    if not _committed(".gitattributes"):
        pytest.skip(".gitattributes is not committed yet")
    dst = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "-c", "core.autocrlf=true", str(ROOT), str(dst)], check=True)
    assert set(verify(dst / "data")) == set(GENERATORS)


@pytest.mark.slow
def test_a_non_editable_install_finds_the_data(tmp_path):
    """pip install from a git URL (the Colab route) builds a wheel: the data ships as labkit/datasets."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-w", str(wheels)], check=True,
                   capture_output=True)
    subprocess.run(pip + ["install", "--no-deps", "--target", str(target), *map(str, wheels.glob("*.whl"))],
                   check=True, capture_output=True)
    code = ("import labkit, labkit.datafiles as d; from labkit.data import load_instructions; "
            "from labkit.paradigms.preference import load_preferences; "
            "assert d.DATA_DIR.parent == __import__('pathlib').Path(labkit.__file__).parent, d.DATA_DIR; "
            "print(len(d.verify()), len(load_instructions()), len(load_preferences()))")
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(len(GENERATORS)), "2000", "800"]

"""Create or reuse the lab's virtual environment; install only what is missing.

Run by `make lab` and `make test` with any Python >= 3.10:

    python3 tools/setup_env.py [--venv .venv]

Order of work, so that a second run takes about a second:
1. The venv is created if absent. When the interpreter that runs this script already has a CUDA
   torch, the venv sees it (`--system-site-packages`) so that build is kept, not replaced.
2. torch is installed first, and only if the venv cannot import it:
   - a machine with an NVIDIA driver (`nvidia-smi`) gets PyPI's default (CUDA) build;
   - a machine without one gets a CPU build: from a local wheel directory when pip is configured
     with one (`--no-index`, find-links), else from the PyTorch CPU index; only if neither is
     reachable does it fall back to PyPI's default build, and says so.
3. `pip install -e .[dev]` runs when pyproject.toml changed since the last successful run
   (a stamp file in the venv records its hash).
4. JupyterLab is told (inside the venv only) to open Markdown files rendered, so `make lab`
   shows the notebook map as a page, and not to greet a newcomer with a news pop-up.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import venv as venv_module
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_SPEC = "torch>=2.2"
SETUP_VERSION = "1"  # bump to force a reinstall on every machine


def log(message: str) -> None:
    print(f"[setup] {message}", flush=True)


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def base_has_cuda_torch() -> bool:
    """True when the interpreter running this script imports a CUDA build of torch."""
    probe = "import torch,sys; sys.exit(0 if torch.version.cuda else 1)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def ensure_venv(venv_dir: Path) -> Path:
    py = venv_python(venv_dir)
    if py.exists():
        return py
    system_site = base_has_cuda_torch()
    log(f"creating {venv_dir}" + (" (sharing this Python's CUDA torch)" if system_site else ""))
    venv_module.EnvBuilder(with_pip=True, system_site_packages=system_site).create(venv_dir)
    return py


def can_import(py: Path, module: str) -> bool:
    probe = f"import importlib.util,sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0


def pip(py: Path, *args: str, check: bool = True) -> bool:
    cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", *args]
    log(" ".join(cmd[1:]))
    ok = subprocess.run(cmd).returncode == 0
    if check and not ok:
        sys.exit(f"[setup] failed: {' '.join(cmd)}")
    return ok


def has_nvidia_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return out.returncode == 0 and "GPU" in out.stdout


def ensure_torch(py: Path) -> None:
    if can_import(py, "torch"):
        return
    if has_nvidia_gpu():
        log("NVIDIA GPU found: installing PyPI's CUDA build of torch")
        pip(py, TORCH_SPEC)
        return
    log("no NVIDIA GPU: installing a CPU build of torch")
    if pip(py, "--no-index", TORCH_SPEC, check=False):  # a local wheel directory (pip find-links)
        return
    if pip(py, "--index-url", CPU_INDEX, "--timeout", "20", "--retries", "1", TORCH_SPEC, check=False):
        return
    log("WARNING: no CPU build of torch was reachable; falling back to PyPI's default build "
        "(on Linux x86_64 that is a multi-GB CUDA build)")
    pip(py, TORCH_SPEC)


def configure_lab(venv_dir: Path) -> None:
    """Open Markdown files rendered in JupyterLab, no news pop-up, no nbgrader menus, each lesson listed once
    (this venv only)."""
    settings = venv_dir / "share/jupyter/lab/settings"
    settings.mkdir(parents=True, exist_ok=True)
    overrides = settings / "overrides.json"
    wanted = {"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Markdown Preview"}},
              # no news pop-up and no update check for a newcomer (and nothing fetched from the network)
              "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False}}
    if not overrides.exists() or json.loads(overrides.read_text() or "{}") != wanted:
        overrides.write_text(json.dumps(wanted, indent=2) + "\n")
    # nbgrader is a dev dependency (its export is tested); its course-management menus are not for learners
    nbgrader_off = {"ServerApp": {"jpserver_extensions": {f"nbgrader.server_extensions.{name}": False for name in
                                                          ("formgrader", "validate_assignment", "assignment_list",
                                                           "course_list")}}}
    server = venv_dir / "etc/jupyter/jupyter_server_config.d"
    server.mkdir(parents=True, exist_ok=True)
    (server / "zz_labkit_no_nbgrader.json").write_text(json.dumps(nbgrader_off, indent=2) + "\n")
    # the file browser lists each lesson once: a notebook's jupytext .py pair stays beside it, unlisted
    # (the server reads config.d folders for extensions only, so this goes in the venv's own config file)
    server_file = venv_dir / "etc/jupyter/jupyter_server_config.json"
    config = json.loads(server_file.read_text() or "{}") if server_file.exists() else {}
    config.setdefault("ServerApp", {})["contents_manager_class"] = "labkit.labserver.LessonListingManager"
    server_file.write_text(json.dumps(config, indent=2) + "\n")
    labconfig = venv_dir / "etc/jupyter/labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    page = labconfig / "page_config.json"
    config = json.loads(page.read_text() or "{}") if page.exists() else {}
    config.setdefault("disabledExtensions", {})["@jupyter/nbgrader"] = True
    page.write_text(json.dumps(config, indent=2) + "\n")


def project_hash() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(SETUP_VERSION.encode())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", default=str(ROOT / ".venv"))
    args = parser.parse_args()
    if sys.version_info < (3, 10):
        sys.exit("[setup] Python >= 3.10 is needed; run with e.g. PYTHON=python3.11 make test")
    venv_dir = Path(args.venv).resolve()
    py = ensure_venv(venv_dir)
    stamp = venv_dir / ".labkit-setup"
    if stamp.exists() and stamp.read_text().strip() == project_hash() and can_import(py, "torch"):
        configure_lab(venv_dir)   # cheap: keeps the lab's settings current in an existing venv
        log(f"{venv_dir.name} is up to date")
        return
    ensure_torch(py)
    pip(py, "-e", f"{ROOT}[dev]")
    configure_lab(venv_dir)
    stamp.write_text(project_hash() + "\n")
    log("done")


if __name__ == "__main__":
    main()

"""labkit: the package behind Paradigm Lab.

The pipeline of every paradigm is `raw record -> example builder -> collator -> loss reducer`;
the modules follow it (vocab, batch, reduce, paradigms/*). Importing labkit does no work: no
seeding, no device probing, no downloads.

Imports sit at module top everywhere, with one exception, said here once: heavy optional packages
(matplotlib in viz, transformers/tokenizers in vocab, scikit-learn in data, torch in this file) are
imported inside the function that needs them, so `import labkit` and the core modules stay light.
"""
from __future__ import annotations

import os

__version__ = "0.1.0"
DEFAULT_SEED = 0


def __getattr__(name):
    """IGNORE and ContractError live in labkit.contracts (the bottom module, which imports torch);
    they are looked up on first use so that `import labkit` itself stays light."""
    if name in ("IGNORE", "ContractError"):
        from labkit import contracts

        return getattr(contracts, name)
    raise AttributeError(f"module 'labkit' has no attribute {name!r}")

__all__ = ["IGNORE", "DEFAULT_SEED", "seed_everything", "device", "setup_notebook", "__version__"]


def seed_everything(seed: int | None = None) -> int:
    """Seed python, numpy and torch; return the seed used.

    Precedence: `LABKIT_SEED` in the environment, then `seed`, then DEFAULT_SEED (0), so anyone can
    rerun a notebook under another seed and check that a conclusion is not a lucky draw.
    """
    import random

    import numpy as np
    import torch

    from labkit.contracts import ContractError

    env = os.environ.get("LABKIT_SEED")
    if env is not None and env.strip() != "":
        try:
            seed = int(env)
        except ValueError:
            raise ContractError(f"LABKIT_SEED must be an integer, got {env!r}; fix: e.g. LABKIT_SEED=1") from None
    if seed is None:
        seed = DEFAULT_SEED
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def device():
    """The torch device the lab trains on: cuda when available, else cpu.

    `LABKIT_DEVICE=cpu|cuda` overrides; asking for cuda on a machine without it is an error.
    """
    import torch

    from labkit.contracts import ContractError

    wanted = os.environ.get("LABKIT_DEVICE", "").strip().lower()
    if wanted not in ("", "cpu", "cuda"):
        raise ContractError(f"LABKIT_DEVICE must be 'cpu' or 'cuda', got {wanted!r}; fix: unset it or use one of those")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ContractError("LABKIT_DEVICE=cuda but torch sees no CUDA device; fix: unset LABKIT_DEVICE or install a CUDA build of torch")
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def setup_notebook(seed: int | None = None):
    """The first code cell of every notebook: seed, pick the device, print the versions.

    Returns (seed, device). Prints one line such as
    "labkit 0.1.0 | torch 2.13.0 | transformers 5.24.0 | python 3.11.7 | device cpu | seed 0".
    """
    import platform

    import torch

    used = seed_everything(seed)
    dev = device()
    torch.set_printoptions(precision=4, sci_mode=False)
    try:
        import transformers

        tf = f" | transformers {transformers.__version__}"
    except ImportError:  # pragma: no cover - transformers is a dependency
        tf = ""
    print(f"labkit {__version__} | torch {torch.__version__}{tf} | python {platform.python_version()} "
          f"| device {dev.type} | seed {used}")
    return used, dev

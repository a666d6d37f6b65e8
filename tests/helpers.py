"""Small shared helpers for the unit tests (not a test module itself)."""
from __future__ import annotations


import torch
import torch.nn as nn

import symlib

# The tests use tiny networks; on a 2-core machine shared with other work, torch's
# intra-op thread pool only adds contention (measured: ~5x slower with 2 threads while
# another process trains). One thread keeps the suite fast and its timing stable.
torch.set_num_threads(1)

MULTI = symlib.make_task("multiobject")


def gen(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def small_model(arch: str, d_model: int = 16, seed: int = 0, vocab_size: int = 9) -> symlib.SequenceModel:
    """A small, randomly initialised symlib network in eval mode (deterministic for ``seed``)."""
    torch.manual_seed(seed)
    return symlib.make_model(arch, vocab_size=vocab_size, d_model=d_model).eval()


def random_positions(lengths: torch.Tensor, generator: torch.Generator, low: int = 0) -> torch.Tensor:
    """One position per row drawn uniformly in [low, length - 1]: (batch,)."""
    u = torch.rand(lengths.shape[0], generator=generator)
    return (low + (u * (lengths - low).float()).long()).clamp(max=lengths - 1)


def wrap(module: nn.Module, site: str, time_dim: int | None = None) -> symlib.HookedModel:
    """``symlib.wrap_model``, as a user would call it."""
    return symlib.wrap_model(module, site, time_dim)

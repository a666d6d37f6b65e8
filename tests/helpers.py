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


class HandCounter(nn.Module):
    """A relu RNN with hand-set weights: unit 0 holds the count, unit 1 the phase, units 2-7 a token memory.

    Read-out features f0 = relu(h0), f1 = relu(h0 - 1), f2 = relu(1 - h1); logits:
    R = 10 (f0 - f1), E = 5, and 20 f2 on D0 (or, with ``uniform_demo``, on D0, D1, D2 and T
    alike). In the response phase R wins while the count is > 0, E at 0.
    """

    def __init__(self, with_count: bool = True, uniform_demo: bool = False, d: int = 8):
        super().__init__()
        self.emb = nn.Embedding(9, 9)
        self.rnn = nn.RNN(9, d, nonlinearity="relu", batch_first=True)
        self.feat = nn.Linear(d, 3)
        self.out = nn.Linear(3, 9)
        with torch.no_grad():
            for p in self.parameters():
                p.zero_()
            self.emb.weight.copy_(torch.eye(9))
            W_ih, W_hh = self.rnn.weight_ih_l0, self.rnn.weight_hh_l0
            if with_count:
                W_hh[0, 0] = 1.0
                W_ih[0, 3:6] = 1.0  # demo tokens D0, D1, D2 count up
                W_ih[0, 6] = -1.0  # R counts down
            W_hh[1, 1] = 1.0
            W_ih[1, 7] = 1.0  # T switches the phase on
            for k in range(2, d):  # irrelevant, decaying memory of which demo word was seen
                W_ih[k, 3 + k % 3] = 0.5
                W_hh[k, k] = 0.5
            self.feat.weight[0, 0] = 1.0
            self.feat.weight[1, 0], self.feat.bias[1] = 1.0, -1.0
            self.feat.weight[2, 1], self.feat.bias[2] = -1.0, 1.0
            self.out.weight[6, 0], self.out.weight[6, 1] = 10.0, -10.0
            self.out.bias[2] = 5.0
            self.out.weight[[3, 4, 5, 7] if uniform_demo else [3], 2] = 20.0

    def forward(self, tokens):
        h, _ = self.rnn(self.emb(tokens))
        return self.out(torch.relu(self.feat(h)))


def permuted_counter(perm: list[int], **kw) -> nn.Module:
    """A ``HandCounter`` whose hidden units are reordered: new unit i is old unit ``perm[i]``
    (so the count lives at ``perm.index(0)``). The network computes the same function."""
    net = HandCounter(d=len(perm), **kw)
    p = torch.tensor(perm)
    with torch.no_grad():
        rnn = net.rnn
        rnn.weight_ih_l0.copy_(rnn.weight_ih_l0[p])
        rnn.weight_hh_l0.copy_(rnn.weight_hh_l0[p][:, p])
        rnn.bias_ih_l0.copy_(rnn.bias_ih_l0[p])
        rnn.bias_hh_l0.copy_(rnn.bias_hh_l0[p])
        net.feat.weight.copy_(net.feat.weight[:, p])
    return net


def scaled_counter(scale: float = 1.0, offset: float = 0.0, **kw) -> nn.Module:
    """A ``HandCounter`` whose state is ``scale`` times larger, its count unit shifted by ``offset``
    (set by the start token ``B``): unit 0 holds ``offset + scale * count``. It computes the same
    function as ``HandCounter(**kw)``; only the code of its state differs."""
    net = HandCounter(**kw)
    with torch.no_grad():
        rnn = net.rnn
        rnn.weight_ih_l0.mul_(scale)
        rnn.weight_ih_l0[0, 1] = offset  # B starts the count unit at the offset
        net.feat.weight.div_(scale)
        net.feat.bias[0] -= offset / scale
        net.feat.bias[1] -= offset / scale
    return net

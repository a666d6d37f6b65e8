"""Alignment functions for DAS/MAS: invertible maps whose leading coordinates hold the
aligned variables, one contiguous block of ``n_units`` dims per variable.

Interchange for the blocks a row swaps (SPEC section 5)::

    h' = A^-1( (1 - m) * A(h_target) + m * A(h_source) )

Every function computes in float32 whatever the network's dtype, and casts back.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch.nn.utils import parametrizations

from .utils import check_choice

ALIGNMENT_NAMES: tuple[str, ...] = ("orthogonal", "linear", "revnet", "boundless")


class AlignmentFunction(nn.Module):
    """Base class. d: state width; block_sizes: dims of each aligned variable's block."""

    kind = ""

    def __init__(self, d: int, block_sizes: Sequence[int]):
        super().__init__()
        block_sizes = [int(b) for b in block_sizes]
        if not block_sizes or min(block_sizes) < 0:
            raise ValueError(f"block sizes must be non-negative ints, got {block_sizes}")
        k = sum(block_sizes)
        if k > d:
            raise ValueError(f"the aligned subspace ({' + '.join(map(str, block_sizes))} = {k} dims) is wider than the state ({d} dims)")
        self.d = int(d)
        self.block_sizes = block_sizes
        self.k = k

    @property
    def n_blocks(self) -> int:
        return len(self.block_sizes)

    def coord_mask(self, swap: torch.Tensor) -> torch.Tensor:
        """Turn a per-row block choice (batch, n_blocks) into a mask on the k aligned coords (batch, k)."""
        swap = swap.to(torch.float32)
        if swap.dim() == 1:
            swap = swap[:, None].expand(-1, self.n_blocks)
        sizes = torch.tensor(self.block_sizes, device=swap.device)
        return torch.repeat_interleave(swap, sizes, dim=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Map states to aligned coordinates: h (batch, d) -> z (batch, d)."""
        raise NotImplementedError

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """Map aligned coordinates back to states: z (batch, d) -> h (batch, d)."""
        raise NotImplementedError

    def aligned(self, h: torch.Tensor) -> torch.Tensor:
        """The k aligned coordinates of ``h``: (batch, d) -> (batch, k)."""
        return self.forward(h.float())[:, : self.k]

    def block(self, h: torch.Tensor, i: int = 0) -> torch.Tensor:
        """Coordinates of block ``i``: (batch, d) -> (batch, block_sizes[i])."""
        start = sum(self.block_sizes[:i])
        return self.aligned(h)[:, start:start + self.block_sizes[i]]

    def interchange(self, h_t: torch.Tensor, h_s: torch.Tensor, swap: torch.Tensor, source: "AlignmentFunction | None" = None) -> torch.Tensor:
        """Swap the chosen blocks of the source into the target.

        h_t: (batch, d) target states; h_s: (batch, d_s) source states (of another network
        when ``source`` is its alignment, as in MAS); swap: (batch, n_blocks) which blocks
        each row swaps. Returns (batch, d) in h_t's dtype.
        """
        src = self if source is None else source
        dtype = h_t.dtype
        zt = self.forward(h_t.float())
        zs = src.forward(h_s.float())[:, : self.k]
        m = self.coord_mask(swap)
        head = zt[:, : self.k] + m * (zs - zt[:, : self.k])
        return self.inverse(torch.cat([head, zt[:, self.k:]], 1)).to(dtype)

    def penalty(self) -> torch.Tensor:
        """Extra loss term (the boundless search's size penalty); zero for the others."""
        return torch.zeros((), device=next(self.parameters()).device)

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser parameter groups; subclasses may give some parameters their own rate."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def describe(self) -> dict:
        return {"kind": self.kind, "d": self.d, "block_sizes": list(self.block_sizes)}


class OrthogonalAlignment(AlignmentFunction):
    """Classic DAS: a rotation. Only its first k columns matter, so it is stored as a d x k
    matrix Q with orthonormal columns and ``h' = h_t + (m * ((h_s - h_t) Q)) Q^T``, which is
    exactly the rotate-swap-rotate-back of a full d x d rotation."""

    kind = "orthogonal"

    def __init__(self, d, block_sizes):
        super().__init__(d, block_sizes)
        lin = nn.Linear(max(self.k, 1), d, bias=False)
        nn.init.orthogonal_(lin.weight)
        self.lin = parametrizations.orthogonal(lin)

    @property
    def Q(self) -> torch.Tensor:
        """(d, k) with orthonormal columns."""
        return self.lin.weight[:, : self.k]

    def forward(self, h):
        # only the k aligned coordinates are defined; the rest of the rotation never matters
        return h.float() @ self.Q

    def inverse(self, z):
        raise NotImplementedError("an orthogonal alignment stores only its aligned columns; use interchange()")

    def aligned(self, h):
        return self.forward(h)

    def interchange(self, h_t, h_s, swap, source=None):
        dtype = h_t.dtype
        Q = self.Q
        m = self.coord_mask(swap)
        zt = h_t.float() @ Q
        zs = (source.aligned(h_s) if source is not None else h_s.float() @ Q)
        return (h_t.float() + (m * (zs - zt)) @ Q.T).to(dtype)


class LinearAlignment(AlignmentFunction):
    """Any invertible linear map plus a bias: z = W h + b (starts as a random rotation)."""

    kind = "linear"

    def __init__(self, d, block_sizes):
        super().__init__(d, block_sizes)
        W = torch.empty(d, d)
        nn.init.orthogonal_(W)
        self.W = nn.Parameter(W)
        self.b = nn.Parameter(torch.zeros(d))

    def forward(self, h):
        return h.float() @ self.W.T + self.b

    def inverse(self, z):
        return torch.linalg.solve(self.W, (z - self.b).T).T


class _Coupling(nn.Module):
    """One additive coupling layer: a += F(b); b += G(a). Exactly invertible."""

    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.da = d // 2
        db = d - self.da
        self.F = nn.Sequential(nn.Linear(db, hidden), nn.Tanh(), nn.Linear(hidden, self.da))
        self.G = nn.Sequential(nn.Linear(self.da, hidden), nn.Tanh(), nn.Linear(hidden, db))
        for net in (self.F, self.G):  # start as the identity
            nn.init.zeros_(net[2].weight)
            nn.init.zeros_(net[2].bias)

    def forward(self, x):
        a, b = x[:, : self.da], x[:, self.da:]
        a = a + self.F(b)
        b = b + self.G(a)
        return torch.cat([a, b], 1)

    def inverse(self, y):
        a, b = y[:, : self.da], y[:, self.da:]
        b = b - self.G(a)
        a = a - self.F(b)
        return torch.cat([a, b], 1)


class RevNetAlignment(AlignmentFunction):
    """A rotation followed by reversible-residual coupling layers (nonlinear, exactly invertible).

    Between layers the halves are swapped (a fixed permutation), so every coordinate is
    transformed. Starts as a pure rotation (couplings initialised to the identity).
    """

    kind = "revnet"

    def __init__(self, d, block_sizes, n_layers: int = 2, hidden: int | None = None):
        super().__init__(d, block_sizes)
        if d < 2:
            raise ValueError("a reversible-residual alignment needs a state of at least 2 dims")
        lin = nn.Linear(d, d, bias=False)
        nn.init.orthogonal_(lin.weight)
        self.rot = parametrizations.orthogonal(lin)
        self.layers = nn.ModuleList(_Coupling(d, hidden or d) for _ in range(n_layers))

    @staticmethod
    def _flip(x):
        return x.flip(1)

    def forward(self, h):
        x = h.float() @ self.rot.weight
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self._flip(x)
        return x

    def inverse(self, z):
        x = z
        for i, layer in reversed(list(enumerate(self.layers))):
            if i < len(self.layers) - 1:
                x = self._flip(x)
            x = layer.inverse(x)
        return x @ self.rot.weight.T


class BoundlessAlignment(AlignmentFunction):
    """Boundless DAS [ours, beyond the original]: a rotation and a learned, soft subspace size.

    Coordinate j of the rotated state is swapped with weight ``sigmoid((b - j - 0.5) / tau)``;
    the boundary b is learned, a penalty ``size_weight * b`` (a cost per swapped dim) keeps it small, and the
    temperature tau is annealed by the trainer. At evaluation (``hard=True``, the default in
    eval mode) exactly ``n_units = round(b)`` coordinates are swapped. One block only.
    """

    kind = "boundless"

    #: Adam learning rate of the boundary (in dims per step): at the rotation's 1e-3 it could move
    #: only about one dim in a thousand steps and would never leave its starting size.
    boundary_lr = 0.05

    def __init__(self, d, block_sizes=None, init_units: float | None = None, size_weight: float = 0.01):
        if block_sizes is not None and len(block_sizes) != 1:
            raise ValueError("a boundless alignment learns the size of one block; for several variables use 'orthogonal'")
        if block_sizes is not None and block_sizes[0] > d:
            raise ValueError(f"the aligned subspace ({block_sizes[0]} dims) is wider than the state ({d} dims)")
        super().__init__(d, [d])
        lin = nn.Linear(d, d, bias=False)
        nn.init.orthogonal_(lin.weight)
        self.rot = parametrizations.orthogonal(lin)
        self.boundary = nn.Parameter(torch.tensor(float(init_units if init_units is not None else max(d / 4, 1.0))))
        self.register_buffer("temperature", torch.tensor(1.0))
        self.size_weight = size_weight

    @property
    def n_units(self) -> int:
        return int(min(max(round(float(self.boundary.detach())), 1), self.d))

    def set_temperature(self, tau: float) -> None:
        self.temperature.fill_(float(tau))

    def soft_mask(self) -> torch.Tensor:
        j = torch.arange(self.d, device=self.boundary.device, dtype=torch.float32)
        if not self.training:
            return (j < self.n_units).float()
        return torch.sigmoid((self.boundary - j - 0.5) / self.temperature)

    def forward(self, h):
        return h.float() @ self.rot.weight

    def inverse(self, z):
        return z @ self.rot.weight.T

    def coord_mask(self, swap):
        swap = swap.to(torch.float32)
        if swap.dim() == 2:
            swap = swap[:, :1]
        else:
            swap = swap[:, None]
        return swap * self.soft_mask()[None, :]

    def interchange(self, h_t, h_s, swap, source=None):
        dtype = h_t.dtype
        R = self.rot.weight
        zs = (source.forward(h_s) if source is not None else h_s.float() @ R)
        zt = h_t.float() @ R
        m = self.coord_mask(swap)
        return (h_t.float() + (m * (zs - zt)) @ R.T).to(dtype)

    def penalty(self):
        return self.size_weight * self.boundary

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [p for n, p in self.named_parameters() if n != "boundary"], "lr": lr},
                {"params": [self.boundary], "lr": self.boundary_lr}]

    def describe(self):
        return {**super().describe(), "n_units": self.n_units}


def make_alignment(kind: str, d: int, block_sizes: Sequence[int], seed: int | None = None, **kw) -> AlignmentFunction:
    """Build an alignment function of ``kind`` (one of ``ALIGNMENT_NAMES``) for a d-wide state."""
    check_choice("alignment function", kind, ALIGNMENT_NAMES)
    if seed is not None:
        torch.manual_seed(seed)
    if kind == "orthogonal":
        return OrthogonalAlignment(d, block_sizes)
    if kind == "linear":
        return LinearAlignment(d, block_sizes)
    if kind == "revnet":
        return RevNetAlignment(d, block_sizes, **kw)
    return BoundlessAlignment(d, block_sizes, **kw)

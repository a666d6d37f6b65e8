"""Alignment functions for DAS/MAS: invertible maps whose leading coordinates hold the
aligned variables, one contiguous block of ``n_units`` dims per variable.

Interchange for the blocks a row swaps (docs/science.md)::

    h' = A^-1( (1 - m) * A(h_target) + m * A(h_source) )

Every function computes in float32 whatever the network's dtype, and casts back.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
from torch.nn.utils import parametrizations

from ..utils import check_choice

ALIGNMENT_NAMES: tuple[str, ...] = ("orthogonal", "linear", "affine", "revnet", "boundless")


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

    # ---- hooks of the search loop (no-ops here; the boundless search uses them) ----

    #: True when the search should stop this alignment only on ``stop_reason`` (or its step
    #: budget), not on a validation-IIA target or a loss plateau.
    stops_on_own_rule: bool = False

    def on_step(self, step: int) -> None:
        """Prepare training step ``step`` (0-based); called before every step."""

    def progress(self) -> dict:
        """Return extra numbers to record at each evaluation (JSON-able scalars)."""
        return {}

    def stop_reason(self, history: list[dict]) -> str | None:
        """Return why the search should stop now, or None; ``history``: every evaluation record so far."""
        return None

    def penalty(self) -> torch.Tensor:
        """Extra loss term (the boundless search's size penalty); zero for the others."""
        return torch.zeros((), device=next(self.parameters()).device)

    def param_groups(self, lr: float) -> list[dict]:
        """Optimiser parameter groups; subclasses may give some parameters their own rate."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def describe(self) -> dict:
        """Describe how to rebuild this alignment (JSON-able): see ``alignment_from_description``."""
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
    """Any invertible linear map with a bounded condition number: z = W h, W = U diag(s) V^T.

    U and V are rotations (d x d, kept orthogonal by a parametrisation) and the singular
    values are ``s = exp(L tanh(p))`` with ``L = log(max_cond) / 2``, so every s lies in
    [max_cond^-1/2, max_cond^1/2] and cond(W) <= max_cond whatever the optimiser does to
    p. The inverse is then analytic, V diag(1/s) U^T, with no solve. Starts as a random
    rotation (p = 0, s = 1).

    There is no bias: in ``A^-1((1 - m) A(h_t) + m A(h_s))`` a bias b enters as
    ``W^-1((1 - m) b + m b - b) = 0``, so it would be a dead parameter.
    """

    kind = "linear"

    def __init__(self, d, block_sizes, max_cond: float = 100.0):
        super().__init__(d, block_sizes)
        if not max_cond >= 1.0:
            raise ValueError(f"max_cond is a bound on a condition number and must be >= 1, got {max_cond}")
        self.max_cond = float(max_cond)
        self.log_s_max = math.log(self.max_cond) / 2
        self.U = _rotation(d)
        self.V = _rotation(d)
        self.p = nn.Parameter(torch.zeros(d))

    @property
    def singular_values(self) -> torch.Tensor:
        """The singular values of W: (d,), each in [max_cond^-1/2, max_cond^1/2]."""
        return torch.exp(self.log_s_max * torch.tanh(self.p))

    @property
    def W(self) -> torch.Tensor:
        """The map as a (d, d) matrix: z = W h."""
        return (self.U.weight * self.singular_values) @ self.V.weight.T

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        """The k aligned coordinates of a (batch, d) float32 h: (batch, k)."""
        # row form of z = W h is h V diag(s) U^T; coordinate i is row i of U
        return (h @ self.V.weight * self.singular_values) @ self.U.weight[: self.k].T

    def forward(self, h):
        return (h.float() @ self.V.weight * self.singular_values) @ self.U.weight.T

    def inverse(self, z):
        return (z.float() @ self.U.weight / self.singular_values) @ self.V.weight.T

    def aligned(self, h):
        return self._head(h.float())

    def interchange(self, h_t, h_s, swap, source=None):
        # h_t + A^-1(m (A h_s - A h_t)) is the same map for a linear A, but a zero swap adds
        # an exact zero, so it returns h_t bit for bit however badly W is conditioned
        # (A^-1(A h_t) in float32 would not)
        dtype = h_t.dtype
        if source is None:
            delta = self._head(h_s.float() - h_t.float())
        else:
            delta = source.aligned(h_s) - self._head(h_t.float())
        moved = (self.coord_mask(swap) * delta) @ self.U.weight[: self.k] / self.singular_values
        return h_t + (moved @ self.V.weight.T).to(dtype)

    def describe(self):
        return {**super().describe(), "max_cond": self.max_cond}


class AffineAlignment(LinearAlignment):
    """A linear alignment with an offset: z = W h + b.

    Within one network the offset cancels in the interchange (see ``LinearAlignment``), so
    there it searches exactly what ``linear`` does. Between two networks (MAS) it does not:
    the source's aligned coordinates ``W_s h_s + b_s`` are written where the target's
    ``W_t h_t + b_t`` were, so b_s - b_t shifts what the target receives, and networks whose
    codes differ by an offset can be matched. The offset starts at 0.
    """

    kind = "affine"

    def __init__(self, d, block_sizes, max_cond: float = 100.0):
        super().__init__(d, block_sizes, max_cond)
        self.b = nn.Parameter(torch.zeros(d))

    def forward(self, h):
        return super().forward(h) + self.b

    def inverse(self, z):
        return super().inverse(z.float() - self.b)

    def aligned(self, h):
        return self._head(h.float()) + self.b[: self.k]

    def interchange(self, h_t, h_s, swap, source=None):
        if source is None:  # the offset cancels: the linear interchange, a zero swap exact
            return super().interchange(h_t, h_s, swap)
        dtype = h_t.dtype
        delta = source.aligned(h_s) - self.aligned(h_t)
        moved = (self.coord_mask(swap) * delta) @ self.U.weight[: self.k] / self.singular_values
        return h_t + (moved @ self.V.weight.T).to(dtype)


class NormalisedAlignment(AlignmentFunction):
    """An alignment function that works on z-scored states [the original's ``zscore_alignment``].

    ``h -> (h - mean) / std`` (per coordinate, statistics of the network's natural states,
    kept as buffers so a saved alignment carries them) is applied before ``inner`` and undone
    after the interchange. In MAS each network normalises with its own statistics: a source
    state is z-scored with the source's, the result written into the target's z-scored state
    and mapped back with the target's, so networks whose states differ in scale and offset
    (an LSTM's [h; c] reaching 17 where a GRU's stay within 1) meet on a common footing.
    Everything else (hooks, ``Q``, ``n_units``, ...) is the inner alignment's.
    """

    kind = "normalised"

    def __init__(self, inner: AlignmentFunction, mean: torch.Tensor | None = None, std: torch.Tensor | None = None,
                 eps: float = 1e-6):
        super().__init__(inner.d, inner.block_sizes)
        self.inner = inner
        self.k = inner.k
        mean = torch.zeros(inner.d) if mean is None else torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.ones(inner.d) if std is None else torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.shape != (inner.d,) or std.shape != (inner.d,):
            raise ValueError(f"normalisation statistics must have the state's width ({inner.d}), got {tuple(mean.shape)} "
                             f"and {tuple(std.shape)}")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clamp_min(eps).clone())  # a constant coordinate is centred, not blown up

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "inner":
                raise
            return getattr(self.inner, name)

    stops_on_own_rule = property(lambda self: self.inner.stops_on_own_rule)

    def _z(self, h):
        return (h.float() - self.mean) / self.std

    def forward(self, h):
        return self.inner.forward(self._z(h))

    def inverse(self, z):
        return self.inner.inverse(z) * self.std + self.mean

    def aligned(self, h):
        return self.inner.aligned(self._z(h))

    def interchange(self, h_t, h_s, swap, source=None):
        dtype = h_t.dtype
        if source is None:
            out = self.inner.interchange(self._z(h_t), self._z(h_s), swap)
        else:  # the source's own aligned() z-scores its state with its own statistics
            out = self.inner.interchange(self._z(h_t), h_s, swap, source=source)
        return (out.float() * self.std + self.mean).to(dtype)

    def on_step(self, step):
        self.inner.on_step(step)

    def progress(self):
        return self.inner.progress()

    def stop_reason(self, history):
        return self.inner.stop_reason(history)

    def penalty(self):
        return self.inner.penalty()

    def param_groups(self, lr):
        return self.inner.param_groups(lr)

    def describe(self):
        return {"kind": self.kind, "d": self.d, "inner": self.inner.describe()}


@torch.no_grad()
def natural_statistics(model, task, site: str | None = None, n_trials: int = 1_000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of ``model``'s states at ``site`` over every demo and response position of
    ``n_trials`` fresh trials (training counts): ((d,), (d,)), float32 on the CPU."""
    from ..game.counterfactuals import split_seed
    g = torch.Generator().manual_seed(split_seed(seed, "natural_statistics"))
    trials = task.sample(int(n_trials), "train", g, unk_p=0.0)
    was = model.training
    model.eval()
    try:
        S = model.states(trials.tokens.to(model.device), site).float().cpu()
    finally:
        model.train(was)
    L = trials.tokens.shape[1]
    idx = torch.arange(L)[None, :]
    keep = (idx >= 1) & (idx < (trials.lengths - 1)[:, None]) & (idx != trials.trigger_pos[:, None])
    H = S[keep]
    return H.mean(0), H.std(0)


def _rotation(d: int) -> nn.Module:
    """A d x d rotation (its ``.weight``), random at the start and kept orthogonal while it trains."""
    lin = nn.Linear(d, d, bias=False)
    nn.init.orthogonal_(lin.weight)
    return parametrizations.orthogonal(lin)


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
    n_layers: coupling layers; hidden: width of each coupling's MLPs (None: d).
    """

    kind = "revnet"

    def __init__(self, d, block_sizes, n_layers: int = 2, hidden: int | None = None):
        super().__init__(d, block_sizes)
        if d < 2:
            raise ValueError("a reversible-residual alignment needs a state of at least 2 dims")
        if n_layers < 0 or (hidden is not None and hidden < 1):
            raise ValueError(f"a revnet needs n_layers >= 0 and hidden >= 1, got n_layers={n_layers}, hidden={hidden}")
        self.n_layers = int(n_layers)
        self.hidden = int(hidden or d)
        self.rot = _rotation(d)
        self.layers = nn.ModuleList(_Coupling(d, self.hidden) for _ in range(self.n_layers))

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

    def describe(self):
        return {**super().describe(), "n_layers": self.n_layers, "hidden": self.hidden}


class BoundlessAlignment(AlignmentFunction):
    """Boundless DAS [ours, beyond the original]: a rotation and a learned subspace size.

    Coordinate j of the rotated state is swapped with weight ``sigmoid((b - j - 0.5) / tau)``,
    so b is a soft boundary: coordinates well below it are swapped, those above it kept.
    The search learns the rotation and b against the loss plus ``size_weight * soft size``
    (the soft size is the sum of the weights, about b): a cost in nats per swapped dim, so
    b settles where one more dim lowers the loss by about ``size_weight``. At evaluation
    (eval mode) exactly ``n_units = round(b)`` coordinates are swapped, clamped to [0, d];
    0 means that nothing is swapped. One block only; ``block_sizes`` is only checked.

    What makes it learn a size rather than drift (each measured on a trained GRU):

    - b is stored as log b, so Adam's steps, whose size does not depend on the gradient's,
      move it by a fixed *fraction* (``boundary_lr``): halving or doubling b takes ~35
      steps at any size (48 -> 4 dims ~125), where a step of fixed dims is either too slow
      at 48 or too coarse at 2. The gradient reaching log b is dL/db (see ``boundary``).
    - nested cuts (``row_masks``): part of each batch is swapped at a random boundary
      below 2b + 2, which makes the rotation order its coordinates by importance, so the
      gradient at b measures what one dim more or less is really worth. Without them b
      ran ahead of the rotation (which only squeezes the variable in dim by dim) and
      could not grow into coordinates the rotation had never been asked to fill.
    - b is held for ``hold_steps`` while the rotation leaves its random start (the
      gradient on b is then mostly noise, and would stall Adam for a thousand steps),
      and the temperature is annealed from ``tau_start`` to ``tau_end`` over
      ``anneal_steps`` and then held: at 0.35 a coordinate a whole dim inside the boundary
      is swapped at 0.95, near the hard mask of evaluation, while the coordinates next to
      b still pass the loss's gradient to it (at 0.05 it vanished but near half-integers).
    - its own stopping rule (``stop_reason``): b moved less than ``converge_tol`` dims
      over the last ``converge_steps`` steps after the anneal. With ``polish_patience``
      > 0 the size is then fixed (``fixed_units``) and the rotation alone trains on, with
      the hard mask, until the validation loss has not improved for that many evaluations.

    Constructor: init_units: starting size in dims (None: ``default_init``, capped at d);
    size_weight: the penalty per soft dim; the others override the class defaults below.
    """

    kind = "boundless"
    stops_on_own_rule = True

    #: starting boundary in dims when none is given
    default_init = 8.0
    #: Adam learning rate of log b: the fraction b may move per step (0.02: x2 in ~35 steps)
    boundary_lr = 0.02
    tau_start = 1.0
    tau_end = 0.35
    anneal_steps = 200
    #: b is held still for the first hold_steps steps (while the rotation is near random)
    hold_steps = 300
    #: fraction of each training batch swapped at a random cut (see row_masks)
    nested = 0.5
    #: converged: b moved < converge_tol dims over the last converge_steps steps (>= 2 evaluations)
    converge_steps = 300
    converge_tol = 0.5
    #: after convergence, train the rotation at the fixed size until the validation loss has not
    #: improved by polish_tol for polish_patience evaluations (0: stop at convergence)
    polish_patience = 0
    polish_tol = 1e-3

    _SETTINGS = ("tau_start", "tau_end", "anneal_steps", "hold_steps", "nested", "converge_steps", "converge_tol",
                 "polish_patience", "polish_tol")

    def __init__(self, d, block_sizes=None, init_units: float | None = None, size_weight: float = 0.003,
                 tau_start: float | None = None, tau_end: float | None = None, anneal_steps: int | None = None,
                 hold_steps: int | None = None, nested: float | None = None, converge_steps: int | None = None,
                 converge_tol: float | None = None, polish_patience: int | None = None, polish_tol: float | None = None):
        if block_sizes is not None and len(block_sizes) != 1:
            raise ValueError("a boundless alignment learns the size of one block; for several variables use 'orthogonal'")
        if block_sizes is not None and block_sizes[0] > d:
            raise ValueError(f"the aligned subspace ({block_sizes[0]} dims) is wider than the state ({d} dims)")
        super().__init__(d, [d])
        init = min(float(self.default_init), float(d)) if init_units is None else float(init_units)
        if not 0 < init <= d:
            raise ValueError(f"init_units={init_units} dims: the starting size must be in (0, {d}] for a state of {d} dims")
        if size_weight < 0:
            raise ValueError(f"size_weight must be >= 0, got {size_weight}")
        self.init_units, self.size_weight = init, float(size_weight)
        given = dict(tau_start=tau_start, tau_end=tau_end, anneal_steps=anneal_steps, hold_steps=hold_steps, nested=nested,
                     converge_steps=converge_steps, converge_tol=converge_tol, polish_patience=polish_patience, polish_tol=polish_tol)
        for name, value in given.items():
            if value is not None:  # an instance setting; the class default otherwise
                setattr(self, name, type(getattr(type(self), name))(value))
        if not (self.tau_start > 0 and self.tau_end > 0):
            raise ValueError(f"temperatures must be > 0, got tau_start={self.tau_start}, tau_end={self.tau_end}")
        if min(self.anneal_steps, self.hold_steps, self.converge_steps, self.polish_patience) < 0 or not 0 <= self.nested <= 1:
            raise ValueError("step counts and patience must be >= 0 and nested a fraction in [0, 1]")
        self.rot = _rotation(d)
        self.log_boundary = nn.Parameter(torch.tensor(math.log(init)))
        self.register_buffer("temperature", torch.tensor(float(self.tau_start)))
        # the size once fixed for polishing (-1: not fixed); a buffer, so a saved alignment keeps it
        self.register_buffer("fixed_units", torch.tensor(-1))
        # the nested cuts draw from their own generator, seeded from the global one here (so
        # make_alignment's seed fixes them) and never touching the global one while training
        self._gen = torch.Generator().manual_seed(int(torch.randint(2**62, ())))
        self._holding = False  # set by on_step: an alignment trained without the hooks never holds
        self._size_reason, self._polish_from = "", 0

    # ---- the size -------------------------------------------------------------------

    @property
    def boundary(self) -> torch.Tensor:
        """The soft boundary b in dims (a differentiable scalar tensor, > 0).

        Its value is exp(log_boundary), but the gradient reaching log_boundary is dL/db
        itself (straight through), not b dL/db: the latter shrinks with b, and Adam, which
        remembers past gradient sizes for ~1000 steps, would slow b down as it falls.
        While held (``hold_steps``, or once the size is fixed) it passes no gradient.
        """
        u = self.log_boundary
        if self._holding or self.is_fixed:
            return u.detach().exp()
        return u.detach().exp() + (u - u.detach())

    @property
    def boundary_value(self) -> float:
        """The soft boundary b in dims, as a float."""
        return float(self.log_boundary.detach().exp())

    @property
    def is_fixed(self) -> bool:
        """Whether the size has been fixed (after convergence, for polishing)."""
        return int(self.fixed_units) >= 0

    @property
    def n_units(self) -> int:
        """The hard size used at evaluation: round(b) clamped to [0, d] (or the fixed size); 0: nothing is swapped."""
        if self.is_fixed:
            return int(self.fixed_units)
        return int(min(max(round(self.boundary_value), 0), self.d))

    def set_size(self, boundary: float) -> None:
        """Put the boundary at ``boundary`` dims (>= 0; 0 is stored as a tiny positive b) and unfix the size."""
        with torch.no_grad():
            self.log_boundary.fill_(math.log(max(float(boundary), 1e-3)))
            self.fixed_units.fill_(-1)

    def fix_size(self) -> None:
        """Fix the hard size at the current n_units: b stops learning and training uses the hard mask."""
        self.fixed_units.fill_(self.n_units)

    def set_temperature(self, tau: float) -> None:
        self.temperature.fill_(float(tau))

    def _hard_mask(self) -> torch.Tensor:
        j = torch.arange(self.d, device=self.log_boundary.device)
        return (j < self.n_units).float()

    def soft_mask(self) -> torch.Tensor:
        """Swap weight of each rotated coordinate at b: (d,); the hard mask (1 below n_units, else 0)
        in eval mode or once the size is fixed."""
        if not self.training or self.is_fixed:
            return self._hard_mask()
        j = torch.arange(self.d, device=self.log_boundary.device, dtype=torch.float32)
        return torch.sigmoid((self.boundary - j - 0.5) / self.temperature)

    def row_masks(self, n: int) -> torch.Tensor:
        """Swap weights for a training batch of n rows: (n, d).

        A fraction ``nested`` of the rows is cut at a random boundary t, uniform in
        [0, 2b + 2] (b detached; capped at d); the rest use b. Like nested dropout, the cut
        rows make the rotation order its coordinates by how much they matter, below b and
        above it, so the coordinate just past b holds the next most useful direction and
        the loss's gradient at b says what one dim more (or fewer) is really worth. Only
        the rows at b pass the loss's gradient to b.
        """
        j = torch.arange(self.d, device=self.log_boundary.device, dtype=torch.float32)
        b = self.boundary
        cut = (torch.rand(n, generator=self._gen) < self.nested).to(j.device)
        frac = torch.rand(n, generator=self._gen).to(j.device)
        top = torch.clamp(2 * b.detach() + 2, max=float(self.d))
        t = torch.where(cut, top * frac, b.expand(n))
        return torch.sigmoid((t[:, None] - j - 0.5) / self.temperature)

    # ---- the map --------------------------------------------------------------------

    def forward(self, h):
        return h.float() @ self.rot.weight

    def inverse(self, z):
        return z @ self.rot.weight.T

    def coord_mask(self, swap):
        """Per-row swap weights (batch, d) for a per-row choice ``swap`` (batch,) or (batch, 1)."""
        swap = swap.to(torch.float32)
        swap = swap[:, :1] if swap.dim() == 2 else swap[:, None]
        if self.training and not self.is_fixed and self.nested > 0:
            return swap * self.row_masks(swap.shape[0])
        return swap * self.soft_mask()[None, :]

    def interchange(self, h_t, h_s, swap, source=None):
        dtype = h_t.dtype
        R = self.rot.weight
        zs = (source.forward(h_s) if source is not None else h_s.float() @ R)
        zt = h_t.float() @ R
        m = self.coord_mask(swap)
        # added in h_t's dtype, so a zero swap (or a zero size) returns h_t exactly
        return h_t + ((m * (zs - zt)) @ R.T).to(dtype)

    # ---- the search -----------------------------------------------------------------

    def penalty(self):
        """``size_weight`` times the soft size (the sum of the swap weights at b): a scalar."""
        return self.size_weight * self.soft_mask().sum()

    def param_groups(self, lr: float) -> list[dict]:
        """The rotation at the search's ``lr``; log b at ``boundary_lr`` (a fraction of b per step)."""
        return [{"params": [p for n, p in self.named_parameters() if n != "log_boundary"], "lr": lr},
                {"params": [self.log_boundary], "lr": self.boundary_lr}]

    def temperature_at(self, step: int) -> float:
        """The schedule: geometric from tau_start to tau_end over anneal_steps, then tau_end."""
        if step >= self.anneal_steps:
            return self.tau_end
        return self.tau_start * (self.tau_end / self.tau_start) ** (step / self.anneal_steps)

    def on_step(self, step: int) -> None:
        self.set_temperature(self.temperature_at(step))
        self._holding = step < self.hold_steps

    def progress(self) -> dict:
        return {"boundary": round(self.boundary_value, 4), "n_units": self.n_units}

    def stop_reason(self, history: list[dict]) -> str | None:
        """Stop once the size has converged: after the anneal, b moved less than ``converge_tol``
        dims over the last ``converge_steps`` steps (two evaluations at least). With
        ``polish_patience``, fix the size then and stop once the validation loss has not
        improved by ``polish_tol`` for that many evaluations."""
        if self.is_fixed:
            return self._polish_reason(history)
        recs = [r for r in history if r["step"] >= self.anneal_steps and "boundary" in r]
        if len(recs) < 2 or recs[-1]["step"] - recs[0]["step"] < self.converge_steps:
            return None  # the stretch after the anneal is not yet long enough
        window = [r for r in recs if r["step"] >= recs[-1]["step"] - self.converge_steps]
        if len(window) < 2:
            window = recs[-2:]
        values = [r["boundary"] for r in window]
        spread = max(values) - min(values)
        if spread >= self.converge_tol:
            return None
        n = self.n_units
        size = {0: "0 dims: nothing swapped", 1: "1 dim"}.get(n, f"{n} dims")
        reason = (f"boundary converged at {values[-1]:.2f} ({size}): it moved {spread:.2f} < {self.converge_tol} dims "
                  f"from step {window[0]['step']} to {window[-1]['step']}")
        if self.polish_patience == 0:
            return reason
        self.fix_size()
        self._size_reason, self._polish_from = reason, window[-1]["step"]
        return None

    def _polish_reason(self, history: list[dict]) -> str | None:
        recs = [r for r in history if r["step"] >= self._polish_from]
        best, since = math.inf, 0
        for r in recs:
            if r["val_loss"] < best - self.polish_tol:
                best, since = r["val_loss"], 0
            else:
                since += 1
        if since < self.polish_patience:
            return None
        return (f"{self._size_reason}; then trained at {self.n_units} dims until the validation loss stopped improving "
                f"({self.polish_patience} evaluations)")

    def describe(self):
        return {**super().describe(), "init_units": self.init_units, "size_weight": self.size_weight,
                **{k: getattr(self, k) for k in self._SETTINGS}, "boundary": self.boundary_value, "n_units": self.n_units}


_CLASSES: dict[str, type[AlignmentFunction]] = {
    "orthogonal": OrthogonalAlignment, "linear": LinearAlignment, "affine": AffineAlignment, "revnet": RevNetAlignment,
    "boundless": BoundlessAlignment,
}

#: constructor arguments that ``describe()`` records, by kind
_DESCRIBED_ARGS: dict[str, tuple[str, ...]] = {
    "orthogonal": (),
    "linear": ("max_cond",),
    "affine": ("max_cond",),
    "revnet": ("n_layers", "hidden"),
    "boundless": ("init_units", "size_weight") + BoundlessAlignment._SETTINGS,
}


def make_alignment(kind: str, d: int, block_sizes: Sequence[int] | None, seed: int | None = None, **kw) -> AlignmentFunction:
    """Build an alignment function of ``kind`` (one of ``ALIGNMENT_NAMES``) for a d-wide state.

    ``seed``: build deterministically from it without touching torch's global random state
    (None: draw from the global generator). ``kw``: the kind's own constructor arguments.
    """
    check_choice("alignment function", kind, ALIGNMENT_NAMES)
    cls = _CLASSES[kind]
    if seed is None:
        return cls(d, block_sizes, **kw)
    # parameters are built on the CPU, so only the CPU generator is forked and seeded
    # (torch.manual_seed would also reseed every CUDA generator, which fork_rng([]) would not restore)
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        return cls(d, block_sizes, **kw)


def alignment_from_description(desc: dict) -> AlignmentFunction:
    """Rebuild an alignment of the shape ``desc`` (from ``describe()``) describes, ready for ``load_state_dict``.

    The parameters are a fixed placeholder (the global random state is untouched); load the
    saved state dict to get the alignment back. Keys a description lacks take their defaults.
    """
    kind = desc.get("kind")
    if kind == NormalisedAlignment.kind:
        return NormalisedAlignment(alignment_from_description(desc["inner"]))
    check_choice("alignment function", kind, ALIGNMENT_NAMES)
    kw = {k: desc[k] for k in _DESCRIBED_ARGS[kind] if desc.get(k) is not None}
    blocks = None if kind == "boundless" else list(desc["block_sizes"])
    return make_alignment(kind, int(desc["d"]), blocks, seed=0, **kw)

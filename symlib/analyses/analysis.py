"""Analyses of a learned alignment on the network's natural states.

``number_line`` asks whether the aligned subspace *is* the count, not merely whether the
count can be read from it. A least-squares read-out of the count from a 16-dim subspace of
a 128-dim state is nearly perfect in-sample for almost any subspace: on notebook 03's GRU
the learned one gives r = 0.996, but a random orthonormal 16-dim subspace gives 0.986 (and
a random 4-dim one 0.83). So the read-out is fitted on one half of the trials and scored on
the other, and the same is done for random subspaces of the same size; the learned
subspace says something only where it beats them. A 1-dim block needs no fitting at all:
its own coordinate is correlated with the count directly.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..game.programs import Program, make_program
from ..game.tasks import Task

DEMO_PHASE, RESPONSE_PHASE = 0, 1


def natural_states(model, task: Task, program: str | Program, n_trials: int = 400, seed: int = 0,
                   site: str | None = None, counts="train") -> dict:
    """Collect the network's states on fresh trials, with the program's count at each.

    Samples ``n_trials`` trials of ``task`` (no void tokens; counts from ``counts``, a
    sequence or a name in ``COUNT_SETS``) with a generator seeded by ``seed``, runs the
    model in eval mode without gradients (restoring its mode after), and keeps every demo
    and response position: not ``B``, ``T``, ``E`` or padding. ``program`` is a program
    name (one of ``PROGRAM_NAMES``) or a ``Program``.

    Returns numpy arrays over the n_states kept positions, in trial-major order:
    ``H`` (n_states, d) float32 states at ``site`` (the model's default when None);
    ``value`` (n_states,) int64, the program's number variable after that token;
    ``phase`` (n_states,) int64, 0 demo / 1 response; ``trial`` (n_states,) the index of
    the trial (so fits can be split by trial); ``pos`` (n_states,) the token position;
    ``n`` (n_states,) the trial's demo count.
    """
    prog = make_program(program, task) if isinstance(program, str) else program
    g = torch.Generator().manual_seed(int(seed))
    trials = task.sample(int(n_trials), counts, g, unk_p=0.0)
    try:
        device = next(model.parameters()).device
    except (AttributeError, StopIteration):
        device = torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            S = model.states(trials.tokens.to(device), site)
    finally:
        model.train(was_training)
    S = S.detach().float().cpu()

    L = trials.tokens.shape[1]
    idx = torch.arange(L)[None, :]
    tpos = trials.trigger_pos[:, None]
    keep = trials.demo_response_mask()
    trace = prog.trace(trials)
    value = prog.read({k: v[keep] for k, v in trace.items()}, prog.number_variable)
    batch = trials.tokens.shape[0]
    rows = torch.arange(batch)[:, None].expand(batch, L)
    return {
        "H": S[keep].numpy().astype(np.float32, copy=False),
        "value": value.numpy().astype(np.int64),
        "phase": (idx > tpos).expand(batch, L)[keep].numpy().astype(np.int64),
        "trial": rows[keep].numpy().astype(np.int64),
        "pos": idx.expand(batch, L)[keep].numpy().astype(np.int64),
        "n": trials.counts[:, None].expand(batch, L)[keep].numpy().astype(np.int64),
    }


def split_trials(trial: np.ndarray, test_fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split states by trial into fit and test halves: trial (n_states,) -> two bool masks (n_states,).

    A trial's states are strongly correlated (one count sequence), so a state split would let
    the read-out see the test trials; every trial goes wholly to one side. ``test_fraction``
    of the trials (rounded, at least one on each side) are test trials.
    """
    trial = np.asarray(trial)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    ids = np.unique(trial)
    if ids.size < 2:
        raise ValueError(f"a fit/test split by trial needs at least 2 trials, got {ids.size}")
    n_test = int(min(max(round(ids.size * test_fraction), 1), ids.size - 1))
    test_ids = np.random.default_rng(seed).permutation(ids)[:n_test]
    test = np.isin(trial, test_ids)
    return ~test, test


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two (n,) arrays; NaN when either is constant."""
    x, y = np.asarray(x, float) - np.mean(x), np.asarray(y, float) - np.mean(y)
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y / denom) if denom > 0 else math.nan


def fit_readout(Z: np.ndarray, value: np.ndarray, fit: np.ndarray, test: np.ndarray) -> dict:
    """Fit value ~ Z w + b on the ``fit`` rows; score on the ``test`` rows. Z (n_states, k).
    Returns ``w`` (k + 1,: the weights, then the intercept), ``pred`` (every row's read-out), ``r_fit``,
    ``r_test`` and ``r2_test``."""
    X = np.c_[Z, np.ones(len(Z))]
    w, *_ = np.linalg.lstsq(X[fit], value[fit], rcond=None)
    pred = X @ w
    resid = value[test] - pred[test]
    sst = float(((value[test] - value[test].mean()) ** 2).sum())
    return {
        "w": w,
        "pred": pred,
        "r_fit": _pearson(pred[fit], value[fit]),
        "r_test": _pearson(pred[test], value[test]),
        "r2_test": 1.0 - float(resid @ resid) / sst if sst > 0 else math.nan,
    }


def block_coords(align, H: np.ndarray, block: int) -> np.ndarray:
    """Project states on the alignment's block: H (n_states, d) -> (n_states, block size), float64.

    A boundless alignment has one block as wide as the state; its hard size is ``n_units``, so
    its first ``n_units`` aligned coordinates are used.
    """
    try:
        device = next(align.parameters()).device
    except (AttributeError, StopIteration):
        device = torch.device("cpu")
    h = torch.from_numpy(np.ascontiguousarray(H, dtype=np.float32)).to(device)
    with torch.no_grad():
        if getattr(align, "kind", "") == "boundless":
            Z = align.aligned(h)[:, : align.n_units]
        else:
            n_blocks = len(align.block_sizes)
            if not 0 <= block < n_blocks:
                raise ValueError(f"block {block} does not exist: the alignment has {n_blocks} block(s) of sizes {list(align.block_sizes)}")
            Z = align.block(h, block)
    return Z.detach().float().cpu().numpy().astype(np.float64)


def number_line(align, states: dict, block: int = 0, n_random: int = 20, test_fraction: float = 0.5, seed: int = 0) -> dict:
    """Score how well an alignment's block holds the count, on held-out trials and against random subspaces.

    align: an alignment (``block(h, i)``, ``aligned(h)``, ``block_sizes``; a boundless one uses its
    first ``n_units`` coordinates); states: ``natural_states``' dict (``H`` (n_states, d),
    ``value``, ``phase``, ``trial``, (n_states,)). The trials are split into fit and test
    halves (``split_trials``); a least-squares read-out (with intercept) of the value from
    the block's coordinates is fitted on the fit trials and scored on the test trials. The
    same is done for ``n_random`` random orthonormal subspaces of H of the same size (QR of
    a Gaussian matrix from a local generator seeded by ``seed``).

    Returns a dict: ``r_test``, ``r2_test`` (Pearson r and R^2 of the read-out on the test
    trials; R^2 may be negative), ``r_fit`` (in-sample r, for comparison only),
    ``r_test_random_mean``, ``r_test_random_p05``, ``r_test_random_p95`` (over the random
    subspaces; NaN when ``n_random`` is 0), ``r_test_random`` (n_random,), ``n_units`` (the
    block's size), ``r_own_coordinate`` (for a 1-dim block: the correlation of the raw
    coordinate with the value on the test trials, no fitting, sign kept; else None),
    ``trials_fit``, ``trials_test`` (the trial ids on each side), and for a figure
    ``w`` (the read-out's weights, then its intercept, to place other states on the line),
    ``coord_test`` (the read-out on the test states), ``value_test``, ``phase_test``
    ((n_test_states,) each).
    """
    H = np.asarray(states["H"])
    value = np.asarray(states["value"], dtype=np.float64)
    trial = np.asarray(states["trial"])
    phase = np.asarray(states["phase"])
    if not (H.ndim == 2 and len(value) == len(trial) == len(phase) == len(H)):
        raise ValueError(f"states do not line up: H {H.shape}, value {value.shape}, trial {trial.shape}, phase {phase.shape}")
    fit, test = split_trials(trial, test_fraction, seed)

    Z = block_coords(align, H, block)
    k = Z.shape[1]
    if k == 0:
        raise ValueError(f"block {block} of the alignment has no dims")
    learned = fit_readout(Z, value, fit, test)

    # a separate stream from the split, and never the global RNG
    rng = np.random.default_rng([int(seed), 1])
    H64 = H.astype(np.float64)
    r_random = np.empty(int(n_random))
    for j in range(int(n_random)):
        Q, _ = np.linalg.qr(rng.standard_normal((H.shape[1], k)))
        r_random[j] = fit_readout(H64 @ Q, value, fit, test)["r_test"]

    def stat(f):
        return float(f(r_random)) if r_random.size else math.nan

    return {
        "r_test": learned["r_test"],
        "r2_test": learned["r2_test"],
        "r_fit": learned["r_fit"],
        "r_test_random_mean": stat(np.mean),
        "r_test_random_p05": stat(lambda r: np.percentile(r, 5)),
        "r_test_random_p95": stat(lambda r: np.percentile(r, 95)),
        "r_test_random": r_random,
        "n_units": int(k),
        "r_own_coordinate": _pearson(Z[test, 0], value[test]) if k == 1 else None,
        "trials_fit": np.unique(trial[fit]),
        "trials_test": np.unique(trial[test]),
        "w": learned["w"],
        "coord_test": learned["pred"][test],
        "value_test": value[test],
        "phase_test": phase[test],
    }

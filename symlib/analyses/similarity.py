"""Representational similarity between networks: linear CKA and RSA, the baselines MAS is
measured against.

Both compare two sets of states row by row, so the rows must stand for the same thing in
both networks. Networks that read the same inputs can be compared position by position;
networks on different tasks cannot, so ``condition_states`` averages each network's states
over every *program condition* (e.g. count 7 in the response phase) and the two networks
are compared condition by condition. Neither measure intervenes: two networks can hold the
same information in shapes that look alike and still not use it alike, which is what MAS
tests.
"""
from __future__ import annotations

import numpy as np

from .analysis import natural_states


def _as_2d(X, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a (samples, features) array, got shape {X.shape}")
    return X


def _check_pair(X, Y) -> tuple[np.ndarray, np.ndarray]:
    X, Y = _as_2d(X, "X"), _as_2d(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must have the same rows (samples): {X.shape[0]} against {Y.shape[0]}")
    if X.shape[0] < 3:
        raise ValueError(f"need at least 3 samples, got {X.shape[0]}")
    return X, Y


def linear_cka(X, Y) -> float:
    """Linear centred kernel alignment of two (samples, features) arrays (Kornblith et al.
    2019): ``||Yc' Xc||_F^2 / (||Xc' Xc||_F ||Yc' Yc||_F)`` with columns centred. 1 for
    identical inputs; unchanged by rotations and by scaling of either side; feature counts
    may differ. NaN when a side is constant."""
    X, Y = _check_pair(X, Y)
    X = X - X.mean(0)
    Y = Y - Y.mean(0)
    num = np.linalg.norm(Y.T @ X) ** 2
    den = np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y)
    return float(num / den) if den > 0 else float("nan")


def rsa(X, Y, rdm_method: str = "correlation", compare_method: str = "spearman") -> float:
    """Representational similarity analysis of two (samples, features) arrays with rsatoolbox:
    each side's representational dissimilarity matrix over the samples (``rdm_method``,
    default correlation distance), then the two compared (``compare_method``, default
    Spearman's rho over the upper triangles). 1 for identical inputs."""
    X, Y = _check_pair(X, Y)
    try:
        from rsatoolbox.data import Dataset
        from rsatoolbox.rdm import calc_rdm, compare
    except ImportError as e:
        raise ImportError(f"rsa needs rsatoolbox ({e}): pip install -e '.[rsa]' (make installs it)") from e
    rx = calc_rdm(Dataset(X), method=rdm_method)
    ry = calc_rdm(Dataset(Y), method=rdm_method)
    return float(np.asarray(compare(rx, ry, method=compare_method)).squeeze())


def condition_states(model, task, program: str = "up_down", n_trials: int = 400, seed: int = 0, site: str | None = None) -> dict:
    """Mean state per program condition (count value, phase) on fresh trials.

    Returns ``{(value, phase): (d,) mean state}`` for every condition seen (demo and response
    positions; see ``analysis.natural_states``).
    """
    ns = natural_states(model, task, program, n_trials=n_trials, seed=seed, site=site)
    out = {}
    keys = np.stack([ns["value"], ns["phase"]], 1)
    for k in np.unique(keys, axis=0):
        sel = (keys == k).all(1)
        out[(int(k[0]), int(k[1]))] = ns["H"][sel].mean(0)
    return out


def matched_conditions(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray, list]:
    """Stack two ``condition_states`` results over the conditions both have, in one order."""
    keys = sorted(set(a) & set(b))
    if len(keys) < 3:
        raise ValueError(f"the two networks share {len(keys)} program conditions; need at least 3")
    return np.stack([a[k] for k in keys]), np.stack([b[k] for k in keys]), keys


def similarity_matrices(states: dict) -> dict:
    """CKA and RSA between every two networks: ``states`` is {name: condition_states(...)};
    returns {"names", "cka", "rsa"} with (n, n) symmetric matrices."""
    names = list(states)
    n = len(names)
    cka, rs = np.eye(n), np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            X, Y, _ = matched_conditions(states[names[i]], states[names[j]])
            cka[i, j] = cka[j, i] = linear_cka(X, Y)
            rs[i, j] = rs[j, i] = rsa(X, Y)
    return {"names": names, "cka": cka, "rsa": rs}

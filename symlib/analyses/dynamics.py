"""Learning dynamics: how alignment and task accuracy grow over training.

A training run keeps its weights at checkpoints, dense early and sparse later
(``training.is_checkpoint_step``). ``iia_over_training`` runs one alignment search at each
checkpoint, all on the same test pairs and each to convergence, and reads the task accuracy
that training measured at the same step. A search *warm-starts* from the alignment found
at the checkpoint before (``warm=True``): networks a few hundred steps apart hold their
variables in nearly the same place, so the search starts close to its answer. ``warm=False``
starts every search from the same fresh alignment, the check that warm starts do not bias
what is found. Every search is cached in the results store under the checkpoint's weights,
the search config and the weights it started from, so a rerun, or a seed added later,
pays only for what is new.

Then the analyses of chapter 05:

- ``correlation``: Pearson r between IIA and accuracy across checkpoints, per seed and
  pooled, with a paired bootstrap interval;
- ``lag``: which rises first, from the steps at which each curve crosses 25%, 50% and 75%
  of its rise;
- ``iia_by_values`` and ``accuracy_over_training``: the per-count breakdowns (gradience).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..paths import runs_dir
from ..utils import choose_names
from ..networks.training import TrainConfig, check_same_recipe, run_finished, checkpoint_steps, load_checkpoint, load_run, run_config
from ..intervene.controls import CHANGED_CONTROLS, control_configs, fixed_controls, iia_changed_main
from ..intervene.das import DASConfig, DASResult, run_das_batch
from ..intervene.search import BUDGETS
from .stats import mean_ci

#: The search at every checkpoint (orthogonal, 16 dims): to convergence under the book's rule
#: (``search.BUDGETS["finding"]``: the best validation changed-pair IIA gaining less than 0.005
#: over 1000 steps, or validation trial IIA 0.995), capped at 20 000 steps, fresh or warm.
DYNAMICS_SEARCH = dict(BUDGETS["finding"], program="up_down", variable="count", alignment="orthogonal", n_units=16,
                       n_train=10_000, n_val=1_000, n_test=1_000)
#: The cap on a warm-started search (None: the fresh search's cap). A warm search stops on the
#: same convergence rule; a smaller cap makes an illustration whose rows say ``converged`` False.
WARM_STEPS: int | None = None
#: Controls at each checkpoint: ``initial`` (the alignment the search started from, evaluated only).
#: ``wrong_labels`` adds a search of its own per checkpoint (batched with the main one and
#: warm-started along its own chain): about twice the cost.
DYNAMICS_CONTROLS: tuple[str, ...] = ("initial",)
ACCURACY_COLUMNS = ("trial_acc_train", "trial_acc_heldout", "trial_acc_out_of_range")


def dynamics_run_dir(cfg: TrainConfig) -> Path:
    """Where a run for learning dynamics lives.

    A run of the book's recipe (200 steps past the solve, the book's step cap) is the book's
    run, ``data/runs/<name>``, shared with the other chapters; any other recipe (one that trains
    on longer, say) lives in ``data/runs/dynamics/<name>-after<steps>``, ``<name>`` being its
    ``run_name`` (which carries a hash of what differs from the book's recipe).
    """
    if not cfg.changes():
        return runs_dir() / cfg.run_name()
    return runs_dir() / "dynamics" / f"{cfg.run_name()}-after{cfg.patience * cfg.eval_every}"


def dynamics_config(arch: str = "gru", seed: int = 0, task: str = "multiobject", after_solve: int = 200,
                    max_steps: int | None = None, **kw) -> TrainConfig:
    """A training config that goes on ``after_solve`` steps past solving the task.

    Training stops once trial accuracy on training counts has stayed at or above the solve
    threshold for ``after_solve`` steps (``patience`` evaluations), or at ``max_steps`` (None:
    the book's cap, 3000 for RNNs and 1000 for Transformers). 200 is the book's own rule.
    """
    if after_solve < 0:
        raise ValueError(f"after_solve must be >= 0, got {after_solve}")
    eval_every = kw.pop("eval_every", 25)
    return TrainConfig(task=task, arch=arch, seed=seed, max_steps=max_steps, eval_every=eval_every,
                       patience=max(1, math.ceil(after_solve / eval_every)), **kw)


def train_runs(arch: str, seeds: Sequence[int], task: str = "multiobject", after_solve: int = 200,
               device: str = "auto", progress: bool = True, **kw) -> list[Path]:
    """The run folders of ``seeds`` for learning dynamics, training the missing ones (GRU and
    LSTM seeds together as one batched network, ``batched.train_seeds``). A run is taken as
    trained only when its folder holds exactly this recipe's run, ended by its own rule; a
    folder holding another recipe's run raises a ValueError saying what is there and what was asked."""
    from ..networks.batched import train_seeds
    cfgs = [dynamics_config(arch, s, task, after_solve, **kw) for s in seeds]
    dirs = [dynamics_run_dir(c) for c in cfgs]
    for c, d in zip(cfgs, dirs):
        check_same_recipe(d, c)
    todo = [i for i, d in enumerate(dirs) if not run_finished(d, cfgs[i])]
    if todo:
        train_seeds([cfgs[i].seed for i in todo], cfgs[0], run_dirs=[dirs[i] for i in todo], device=device,
                    progress=progress)
    return dirs


def pick_checkpoints(run_dir: str | Path, n: int | None = None, last: int | None = None) -> list[int]:
    """Checkpoint steps of a run: all of them, or ``n`` spread over the run (the first and the
    last always in), up to step ``last`` when given."""
    steps = checkpoint_steps(run_dir)
    if last is not None:
        steps = [s for s in steps if s <= last]
    if not steps:
        raise ValueError(f"{run_dir} holds no checkpoints" + (f" up to step {last}" if last is not None else ""))
    if n is None or n >= len(steps):
        return steps
    if n < 2:
        raise ValueError(f"n must be >= 2 (the first and the last checkpoint), got {n}")
    idx = np.unique(np.round(np.linspace(0, len(steps) - 1, n)).astype(int))
    return [steps[i] for i in idx]


@dataclass
class Dynamics:
    """What ``iia_over_training`` returns.

    table: one row per checkpoint: ``step``, ``iia_test``, ``iia_changed_test``, the
    controls (``initial_iia_changed_test``: the alignment the search started from, i.e. the
    previous checkpoint's for a warm start, on the same pairs; ``wrong_labels_iia_changed_test``
    and ``wrong_labels_iia_changed_main``, the latter on the main search's changed pairs;
    ``control_max_changed_test``), the accuracies training measured at that step
    (``trial_acc_train``, ``trial_acc_heldout``, ``trial_acc_out_of_range``), and the
    search's ``search_steps``, ``search_seconds``, ``cached``, ``start`` (warm or cold).
    results: step -> the main search's ``DASResult`` (per-pair rows for breakdowns).
    """

    table: pd.DataFrame
    results: dict = field(default_factory=dict)


def _history_at(history: list[dict], step: int) -> dict:
    rec = next((r for r in history if r.get("step") == step), None)
    return {k: (rec or {}).get(k, math.nan) for k in ACCURACY_COLUMNS}


def iia_over_training(run_dir: str | Path, cfg: DASConfig | dict | None = None, steps: Sequence[int] | None = None,
                      warm: bool = True, warm_steps: int | None = WARM_STEPS, controls=DYNAMICS_CONTROLS, store=True, device: str = "auto",
                      progress: bool = True) -> Dynamics:
    """One alignment search per checkpoint of a saved run, on the same test pairs and budget.

    cfg: the search (``DYNAMICS_SEARCH`` where it says nothing). steps: the checkpoints
    (default all; see ``pick_checkpoints``), searched in order. warm: start each search from
    the previous checkpoint's alignment (the first search starts fresh); False starts every one
    fresh. Every search stops on ``cfg``'s convergence rule or its cap: ``cfg.max_steps`` for
    a fresh search, ``warm_steps`` for a warm one (None: ``cfg.max_steps``). Each row says
    whether its search ``converged`` and why it stopped. controls: of ``"initial"``, ``"no_swap"``, ``"wrong_labels"`` (a sequence, a comma-separated string, True or False). store: the
    results store (True: the default one; None: no caching).
    """
    run_dir = Path(run_dir)
    tcfg = run_config(run_dir)
    have = checkpoint_steps(run_dir)
    steps = have if steps is None else sorted(int(s) for s in steps)
    missing = [s for s in steps if s not in have]
    if missing:
        raise ValueError(f"no checkpoint at step(s) {missing} in {run_dir}; saved steps: {have}")
    controls = choose_names(controls, ("initial", "no_swap", "wrong_labels"), "control")
    base = DASConfig(**{**DYNAMICS_SEARCH, **(cfg if isinstance(cfg, dict) else asdict(cfg) if cfg else {})})
    task = tcfg.make_task()
    if warm_steps is not None and (isinstance(warm_steps, bool) or not isinstance(warm_steps, int) or warm_steps < 1):
        raise ValueError(f"warm_steps={warm_steps!r} is not allowed: an integer >= 1 (a cap on a warm-started search), "
                         "or None (the fresh search's cap)")
    learned = control_configs(base, task, [c for c in controls if c == "wrong_labels"])
    cold_cfgs = [base, *learned.values()]
    warm_cfgs = [replace(c, max_steps=warm_steps or c.max_steps) for c in cold_cfgs]
    history = load_run(run_dir).history if (run_dir / "latest.pt").exists() else []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(steps), desc=f"IIA over training ({tcfg.arch}, seed {tcfg.seed})", unit="ckpt")
    prev: list | None = None
    rows, results = [], {}
    try:
        for step in steps:
            model, _, _ = load_checkpoint(run_dir / "ckpt" / f"step_{step:06d}.pt", device)
            t0 = time.perf_counter()
            is_warm = warm and prev is not None
            res = run_das_batch(model, task, warm_cfgs if is_warm else cold_cfgs, progress=False, store=store,
                                token_iia=False, init=prev if is_warm else None)
            main = res[0]
            row = {"step": step, "arch": tcfg.arch, "task": tcfg.task, "seed": tcfg.seed,
                   "iia_test": main.metrics["iia_test"], "iia_changed_test": main.metrics["iia_changed_test"],
                   "iia_val": main.metrics["iia_val"]}
            # the initial control is the alignment this search started from: the previous
            # checkpoint's for a warm start, a fresh one for a cold start
            fixed = (fixed_controls(model, task, main, start=prev[0] if is_warm else None)
                     if {"initial", "no_swap"} & set(controls) else {})
            for name in ("initial", "no_swap"):
                if name in controls:
                    row[f"{name}_iia_test"] = fixed[name]["iia_test"]
                    row[f"{name}_iia_changed_test"] = fixed[name]["iia_changed_test"]
            for name, r in zip(learned, res[1:]):
                row[f"{name}_iia_test"] = r.metrics["iia_test"]
                row[f"{name}_iia_changed_test"] = r.metrics["iia_changed_test"]
                row[f"{name}_iia_changed_main"] = iia_changed_main(model, task, main, r)
            scored = [row[f"{c}_iia_changed_test"] for c in CHANGED_CONTROLS if f"{c}_iia_changed_test" in row
                      and row[f"{c}_iia_changed_test"] is not None]
            row["control_max_changed_test"] = max(scored) if scored else math.nan
            row.update(_history_at(history, step))
            row.update({"search_steps": main.metrics["steps"], "converged": bool(main.metrics["converged"]),
                        "stopped_because": main.metrics.get("stopped_because"), "search_seconds": round(time.perf_counter() - t0, 3),
                        "cached": bool(main.metrics.get("cached", False)), "start": "warm" if is_warm else "cold"})
            rows.append(row)
            results[step] = main
            prev = [r.alignment for r in res]
            if bar is not None:
                bar.update(1)
                bar.set_postfix(step=step, iia=f"{row['iia_changed_test']:.3f}", acc=f"{row['trial_acc_train']:.3f}")
    finally:
        if bar is not None:
            bar.close()
    return Dynamics(pd.DataFrame(rows), results)


# ---------------------------------------------------------------- correlation and lag

def _pearson_along(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson r along ``axis`` (vectorised for scipy's bootstrap); NaN where either is constant."""
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    den = np.sqrt((x * x).sum(axis=axis) * (y * y).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (x * y).sum(axis=axis) / np.where(den > 0, den, 1.0), np.nan)


def correlation_ci(x: Sequence[float], y: Sequence[float], confidence: float = 0.95, n_resamples: int = 5000,
                   seed: int = 0) -> dict:
    """Pearson r of paired values and a percentile-bootstrap interval (pairs resampled together).

    Returns ``{"r", "lo", "hi", "n"}``. Pairs with a NaN are dropped. Fewer than 3 pairs, or a
    constant x or y, give NaN (r is undefined). Resamples in which a side is constant are
    left out of the interval.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"x and y must pair up: shapes {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(x.size)
    r = float(_pearson_along(x, y)) if n >= 3 else math.nan
    if math.isnan(r):
        return {"r": r, "lo": math.nan, "hi": math.nan, "n": n}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(int(n_resamples), n))
    boot = _pearson_along(x[idx], y[idx], axis=1)
    boot = boot[~np.isnan(boot)]
    a = (1 - confidence) / 2
    lo, hi = (np.quantile(boot, [a, 1 - a]) if boot.size else (math.nan, math.nan))
    return {"r": r, "lo": float(min(lo, r)), "hi": float(max(hi, r)), "n": n}


def correlation(table: pd.DataFrame, iia: str = "iia_changed_test", accuracy: str = "trial_acc_train",
                by: str = "seed", **kw) -> pd.DataFrame:
    """IIA against accuracy across checkpoints: one row per ``by`` group (e.g. seed) and a
    ``pooled`` row over every checkpoint of every group. Columns: group, r, lo, hi, n."""
    for c in (iia, accuracy, by):
        if c not in table:
            raise KeyError(f"correlation: no column {c!r} in the table; its columns: {list(table.columns)}")
    rows = [{by: g, **correlation_ci(d[iia], d[accuracy], **kw)} for g, d in table.groupby(by, sort=True)]
    rows.append({by: "pooled", **correlation_ci(table[iia], table[accuracy], **kw)})
    return pd.DataFrame(rows)


def crossing_step(steps: Sequence[float], values: Sequence[float], level: float) -> float:
    """The step at which a curve first reaches ``level`` of its rise, interpolated between checkpoints.

    The rise runs from the curve's first value to its maximum: level 0.5 is halfway. NaN
    when the curve never rises (its maximum is its first value).
    """
    s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    keep = ~np.isnan(v)
    s, v = s[keep], v[keep]
    if v.size == 0 or v.max() <= v[0]:
        return math.nan
    target = v[0] + level * (v.max() - v[0])
    i = int(np.argmax(v >= target))
    if i == 0:
        return float(s[0])
    f = (target - v[i - 1]) / (v[i] - v[i - 1])
    return float(s[i - 1] + f * (s[i] - s[i - 1]))


def lag(table: pd.DataFrame, iia: str = "iia_changed_test", accuracy: str = "trial_acc_train", by: str = "seed",
        levels: Sequence[float] = (0.25, 0.5, 0.75)) -> dict:
    """Which rises first, IIA or accuracy? Per group, the step each curve crosses each level of
    its rise; ``lag`` = IIA's step minus accuracy's (negative: IIA first).

    Returns ``{"by_group": DataFrame(group, level, step_iia, step_acc, lag), "mean_lag", "lo",
    "hi", "n", "iia_first"}``: the mean over groups of each group's mean lag with its bootstrap
    interval, and the share of (group, level) crossings where IIA came first (ties count half).
    """
    rows = []
    for g, d in table.sort_values("step").groupby(by, sort=True):
        for q in levels:
            si, sa = crossing_step(d.step, d[iia], q), crossing_step(d.step, d[accuracy], q)
            rows.append({by: g, "level": q, "step_iia": si, "step_acc": sa, "lag": si - sa})
    df = pd.DataFrame(rows, columns=[by, "level", "step_iia", "step_acc", "lag"])
    per_group = df.groupby(by).lag.mean().dropna()
    ci = mean_ci(per_group.to_numpy()) if len(per_group) else {"mean": math.nan, "lo": math.nan, "hi": math.nan, "n": 0}
    lags = df.lag.dropna()
    first = float(((lags < 0) + 0.5 * (lags == 0)).mean()) if len(lags) else math.nan
    return {"by_group": df, "mean_lag": ci["mean"], "lo": ci["lo"], "hi": ci["hi"], "n": ci["n"], "iia_first": first}


# ---------------------------------------------------------------- per-count breakdowns

def iia_by_values(result: DASResult, by: str = "source_value", against: str | None = "target_value",
                  changed_only: bool = True) -> pd.DataFrame:
    """IIA per (swapped-in value, target's value), or per ``by`` alone when ``against`` is None,
    from a search's test pairs: a tidy table with ``by`` (and ``against``), ``iia``, ``n``.
    Only pairs whose swap changes the answer count when ``changed_only``."""
    r = result.rows
    keep = r["changed"].astype(bool) if changed_only else np.ones(len(r["correct"]), bool)
    keys = [by] if against is None else [by, against]
    df = pd.DataFrame({**{k: np.asarray(r[k])[keep] for k in keys}, "correct": r["correct"][keep].astype(float)})
    out = df.groupby(keys).correct.agg(["mean", "size"]).reset_index()
    return out.rename(columns={"mean": "iia", "size": "n"})


def accuracy_over_training(run_dir: str | Path, steps: Sequence[int], counts="all", n_per_count: int = 100,
                           device: str = "auto", seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """Trial accuracy per demo count at each checkpoint: (step, count, trial_acc, mean_error, ...)."""
    from .compare import accuracy_by_count  # compare imports this module's neighbours; keep the import lazy
    run_dir = Path(run_dir)
    tcfg = run_config(run_dir)
    task = tcfg.make_task()
    out = []
    it = steps
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(steps, desc="accuracy by count", unit="ckpt")
    for step in it:
        model, _, _ = load_checkpoint(run_dir / "ckpt" / f"step_{step:06d}.pt", device)
        out.append(accuracy_by_count(model, task, counts, n_per_count=n_per_count, seed=seed).assign(step=step))
    return pd.concat(out, ignore_index=True)

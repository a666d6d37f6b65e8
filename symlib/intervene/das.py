"""Distributed Alignment Search: the search loop.

The network is frozen; only the alignment function learns, by cross-entropy of the
network's predictions on the counterfactual sequence after the interchange (see the
docs/science.md). States at the intervention sites are computed once.

Every search has three sets of pairs: *training* pairs (the loss), *validation* pairs
(stopping, and choosing the best alignment, which is the one returned) and *test* pairs
with their own seed, used only for the reported numbers (``iia_test``,
``iia_changed_test``); optionally test pairs on held-out counts (``iia_test_heldout``).

``run_das_batch`` trains several alignments on one frozen network in one pass (a
subspace sweep, or a search and its learnable controls): the maps are kept separate, the
pairs of every member are stacked into one batch, and each member stops on its own rule.
The result equals separate searches up to float error. ``run_das`` is a batch of one.
Measurement lives in ``iia``, controls in ``controls``, caching in ``store``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Optional, Sequence

import torch

from ..utils import atomic_torch_save, check_choice
from ..game.counterfactuals import CounterfactualPairs, make_splits, split_seed, variable_blocks, wrong_labels
from ..game.programs import make_program
from ..game.tasks import Task
from ..networks.models import SequenceModel, check_task
from . import search
from .alignment import (ALIGNMENT_NAMES, AlignmentFunction, NormalisedAlignment, alignment_from_description, make_alignment,
                        natural_statistics)
from .iia import PairStates, evaluate_alignment, pair_rows, split_metrics
from .store import ResultsStore, resolve_store

ALIGNMENT_FORMAT = "symlib-alignment/2"
SPLITS = ("train", "val", "test", "test_heldout")


@dataclass
class DASConfig(search.SearchConfig):
    """One alignment search on one network (the shared fields are ``search.SearchConfig``'s).
    Defaults follow the original recipe."""

    site: Optional[str] = None  # default: the model's default site
    n_test_heldout: int = 0  # test pairs on held-out counts (4, 9, 14, 17); 0: none
    loss_on: str = "all"  # "all": every non-pad token after the swap (the original); "task_mask": task-mask tokens only
    boundless_init: Optional[float] = None  # boundless: starting size in dims (None: its default)
    boundless_penalty: Optional[float] = None  # boundless: cost per swapped dim (None: its default)

    ALIGNMENTS: ClassVar[tuple] = ALIGNMENT_NAMES

    def _check_own(self):
        check_choice("loss_on", self.loss_on, ("all", "task_mask"))

    def __post_init__(self):
        super().__post_init__()
        if self.n_test_heldout < 0:
            raise ValueError(f"n_test_heldout must be >= 0, got {self.n_test_heldout}")
        if self.alignment == "boundless" and self.n_blocks() != 1:
            raise ValueError("a boundless alignment learns the size of one block; use 'orthogonal' for count_phase")

    def n_blocks(self, task: Task | None = None) -> int:
        """How many aligned blocks the variable needs (count_phase: 2, else 1)."""
        return 2 if self.variable == "count_phase" else 1

    def pair_key(self) -> tuple:
        """What the pairs depend on: searches with equal keys share their pairs."""
        return (self.program, self.variable, self.seed, self.n_train, self.n_val, self.n_test, self.n_test_heldout, self.relabel)


@dataclass
class DASResult(search.SearchResult):
    """What a search returns: the chosen alignment, its config, metrics and history (the
    fields every search result has: ``search.SearchResult``).

    metrics: ``iia_test``, ``iia_changed_test``, ``iia_token_test`` (and ``_val``,
    ``_test_heldout``), ``steps``, ``best_step``, ``seconds``, ``stopped_because``,
    ``converged`` (True: stopped by the convergence rule; False: stopped by the step cap or the
    loss rule first; None: not trained), ...
    ``n_units`` (boundless: the learned size; ``boundary`` its continuous value).
    history: the validation curve, one record per evaluation (``step``, ``val_iia``,
    ``val_iia_changed``, ``val_loss``, ``train_loss``, ...).
    rows: per test pair, numpy arrays (values swapped, counts, ``correct``) for breakdowns.
    """

    alignment: AlignmentFunction
    config: DASConfig
    metrics: dict
    history: list = field(default_factory=list)
    rows: dict = field(default_factory=dict)

    @property
    def maps(self) -> dict:
        return {"alignment": self.alignment}

    def _frame_rows(self) -> list[dict]:
        m = self.metrics
        row = {k: v for k, v in m.items() if k.endswith(("_test", "_val", "_test_heldout")) and not isinstance(v, (list, dict))}
        row.update({"n_units": m.get("n_units", self.config.n_units), "site": self.config.site})
        return [row]


def state_width(model: SequenceModel, site: str | None) -> int:
    """Width of the state at ``site`` (the model's default when None)."""
    return model.state_size(model.check_site(site))


def check_fits(cfg: DASConfig, d: int, site: str | None = None) -> None:
    """Raise a ValueError when ``cfg``'s aligned blocks are wider than a ``d``-wide state."""
    if cfg.alignment == "boundless":
        if cfg.boundless_init is not None and not 0 < cfg.boundless_init <= d:
            raise ValueError(f"boundless_init={cfg.boundless_init} dims does not fit a state of {d} dims")
        return
    k = cfg.n_units * cfg.n_blocks()
    if k > d:
        raise ValueError(f"n_units={cfg.n_units} x {cfg.n_blocks()} block(s) = {k} dims is wider than the state"
                         f"{f' at site {site!r}' if site else ''} ({d} dims)")


def new_alignment(cfg: DASConfig, d: int) -> AlignmentFunction:
    """Build the alignment a search starts from (deterministic for ``cfg.seed``)."""
    kw = {}
    if cfg.alignment == "boundless":
        if cfg.boundless_init is not None:
            kw["init_units"] = cfg.boundless_init
        if cfg.boundless_penalty is not None:
            kw["size_weight"] = cfg.boundless_penalty
        return make_alignment("boundless", d, None, seed=split_seed(cfg.seed, "alignment"), **kw)
    return make_alignment(cfg.alignment, d, [cfg.n_units] * cfg.n_blocks(), seed=split_seed(cfg.seed, "alignment"))


def as_state_dict(a) -> dict | None:
    """An alignment or state dict to start from, as a CPU state dict (None stays None)."""
    if a is None:
        return None
    sd = a.state_dict() if hasattr(a, "state_dict") else a
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


def start_alignment(model: SequenceModel, task: Task, cfg: DASConfig, init=None) -> AlignmentFunction:
    """The alignment a search of ``cfg`` on ``model`` starts from: fresh (seeded), z-scoring with
    the network's natural-state statistics when ``cfg.normalise``, loaded with ``init``'s weights
    (an alignment or state dict) when one is given. On the model's device."""
    site = model.check_site(cfg.site)
    stats = natural_statistics(model, task, site) if cfg.normalise else None
    return _start_alignment(cfg, model.state_size(site), as_state_dict(init), stats).to(model.device)


def _start_alignment(cfg: DASConfig, d: int, init: dict | None, stats: tuple | None = None) -> AlignmentFunction:
    """A fresh alignment for ``cfg`` (normalised with ``stats`` = (mean, std) when given),
    loaded with ``init``'s weights when one is given."""
    align = new_alignment(cfg, d)
    if stats is not None:
        align = NormalisedAlignment(align, *stats)
    if init is not None:
        try:
            align.load_state_dict(init)
        except RuntimeError as e:
            raise ValueError(f"the alignment to start from does not fit this search ({cfg.alignment}, "
                             f"n_units={cfg.n_units}, {d}-dim state): {e}") from None
    return align


def make_search_pairs(task: Task, cfg: DASConfig) -> dict[str, CounterfactualPairs]:
    """The train/val/test(/test_heldout) pairs of a search, each split with its own seed."""
    relabel = wrong_labels(seed=cfg.seed) if cfg.relabel else None
    return make_splits(task, cfg.program, cfg.variable, cfg.seed, cfg.n_train, cfg.n_val, cfg.n_test,
                       n_test_heldout=cfg.n_test_heldout, relabel=relabel)


def _states_for(model, task, cfgs, site_of, pairs_given):
    """Pairs and their states for every member, computed once per distinct pair set and site."""
    cache: dict = {}
    out = []
    for i, cfg in enumerate(cfgs):
        key = (cfg.pair_key(), site_of[i]) if pairs_given is None else ("given", site_of[i])
        if key not in cache:
            pairs = pairs_given if pairs_given is not None else make_search_pairs(task, cfg)
            cache[key] = {name: PairStates.compute(model, p, site_of[i]) for name, p in pairs.items()}
        out.append(cache[key])
    return out



def run_das_batch(
    model: SequenceModel,
    task: Task,
    configs: Sequence[DASConfig],
    pairs: dict[str, CounterfactualPairs] | None = None,
    progress: bool = True,
    train_alignment: bool = True,
    store=None,
    token_iia: bool | Sequence[bool] = True,
    init: Sequence | None = None,
) -> list[DASResult]:
    """Search one alignment per config on the frozen ``model``, all in one batched pass.

    Members may differ in anything but the network; members with the same pair settings
    share their pairs and states. ``pairs``: given train/val/test(/test_heldout) pairs used
    by every member instead of making them. ``train_alignment=False`` evaluates the
    alignments as initialised. ``store``: a ``ResultsStore`` (or True for the default one):
    searches found there are loaded, the others are run and saved. ``token_iia``: measure
    free-running token IIA on the test pairs (per member or for all; it costs ~50x the trial
    IIA, so controls and sweeps skip it and report None). ``init``: per config, an alignment
    (or its state dict) to start from instead of a fresh one, or None (a warm start, e.g.
    from the previous checkpoint's alignment; the store keys it by the start's weights).
    """
    cfgs = [c if isinstance(c, DASConfig) else DASConfig(**c) for c in configs]
    init = [None] * len(cfgs) if init is None else [as_state_dict(a) for a in init]
    if len(init) != len(cfgs):
        raise ValueError(f"init holds {len(init)} entries for {len(cfgs)} configs")
    token_iia = [bool(token_iia)] * len(cfgs) if isinstance(token_iia, bool) else [bool(t) for t in token_iia]
    check_task(model, task)
    site_of = [model.check_site(c.site) for c in cfgs]
    widths = [model.state_size(s) for s in site_of]
    for c, d, s in zip(cfgs, widths, site_of):
        make_program(c.program, task)
        variable_blocks(make_program(c.program, task), c.variable)  # a variable the program has
        check_fits(c, d, s)
    if pairs is not None:
        missing = {"train", "val", "test"} - set(pairs)
        if missing:
            raise ValueError(f"pairs must hold the splits train, val and test; missing: {', '.join(sorted(missing))}")
    store = resolve_store(store)
    results: list[DASResult | None] = [None] * len(cfgs)
    keys = [None] * len(cfgs)
    if store is not None and pairs is None:
        for i, c in enumerate(cfgs):
            keys[i] = store.key(model, task, c, trained=train_alignment, init=init[i])
            results[i] = cached_result(store, keys[i], token_iia=token_iia[i])
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results
    t_start = time.perf_counter()
    states = _states_for(model, task, [cfgs[i] for i in todo], [site_of[i] for i in todo], pairs)
    dev = model.device
    stats = {s: natural_statistics(model, task, s) for s in {site_of[i] for i in todo if cfgs[i].normalise}}
    searches = []
    for i, st in zip(todo, states):
        align = _start_alignment(cfgs[i], widths[i], init[i], stats.get(site_of[i]) if cfgs[i].normalise else None).to(dev)
        d = search.Direction(model, site_of[i], st, align, batch_seed=split_seed(cfgs[i].seed, "batches"))
        searches.append(search.Search(cfgs[i], {"alignment": align}, [d], loss_on=cfgs[i].loss_on))
    trainable = [s for s in searches if train_alignment and (s.cfg.n_units > 0 or s.cfg.alignment == "boundless")]
    for s in searches:
        if s not in trainable:
            s.stopped = "not trained (initial alignment)" if not train_alignment else "nothing to train (n_units=0)"
    if trainable:
        c = trainable[0].cfg
        desc = f"DAS {c.alignment} {c.variable}" if len(trainable) == 1 else f"DAS x{len(trainable)}"
        search.train(trainable, progress, desc, t_start, show_iia=len(searches) == 1)
    for i, s in zip(todo, searches):
        s.maps["alignment"].eval()
        results[i] = _finish(model, s, site_of[i], t_start, token_iia[i])
        if store is not None and keys[i] is not None:
            cache_result(store, keys[i], results[i])
    return results


def cached_result(store: ResultsStore, key: str, token_iia: bool = False) -> DASResult | None:
    """The ``DASResult`` cached in ``store`` under ``key`` (``store.key(model, task, cfg)``), or None.
    ``token_iia``: a result cached without the free-running token IIA does not answer a search that asks for it."""
    entry = store.load_entry(key, maps_file="alignment.pt")
    if entry is None:
        return None
    meta, maps, rows = entry
    if token_iia and meta["metrics"].get("iia_token_test") is None:
        return None
    align = alignment_from_description(meta["alignment"])
    align.load_state_dict(maps["alignment"])
    metrics = dict(meta["metrics"], cached=True)
    return DASResult(align.eval(), DASConfig(**meta["config"]), metrics, meta["history"], rows)


def cache_result(store: ResultsStore, key: str, result: DASResult) -> Path:
    """Save ``result`` in ``store`` under ``key`` atomically (a half-written entry is never visible)."""
    record = {"config": asdict(result.config), "metrics": result.metrics, "history": result.history,
              "alignment": result.alignment.describe()}
    return store.save_entry(key, record, {"alignment": result.alignment.state_dict()}, result.rows, maps_file="alignment.pt")


def _finish(model, m: "search.Search", site, t_start, token_iia: bool = True) -> DASResult:
    """Measure the chosen alignment on the test split(s) and assemble the result."""
    cfg, align = m.cfg, m.maps["alignment"]
    states = {split: m.directions[0].st(split) for split in SPLITS if m.directions[0].has(split)}
    metrics = {}
    ev_val = evaluate_alignment(model, align, states["val"], site, free_running=False)
    metrics.update({"iia_val": ev_val["iia"], "iia_changed_val": ev_val["iia_changed"]})
    ev = evaluate_alignment(model, align, states["test"], site, free_running=token_iia)
    metrics.update(split_metrics(ev, "test"))
    if not token_iia:
        metrics["iia_token_test"] = None
    if "test_heldout" in states:
        metrics.update(split_metrics(evaluate_alignment(model, align, states["test_heldout"], site, free_running=False), "test_heldout"))
        metrics["iia_token_test_heldout"] = None  # measured teacher-forced only; the free-running token IIA is the test split's
    first_95 = next((r for r in m.history if r["val_iia"] >= 0.95), None)
    progress = align.progress()
    metrics.update({
        "steps": m.steps, "best_step": m.best_step if m.history else 0,
        "seconds": round(m.seconds or (time.perf_counter() - t_start), 3),
        "stopped_because": m.stopped, "converged": m.converged,
        "seconds_to_iia_0.95": first_95["seconds"] if first_95 else None,
        "n_units": progress.get("n_units", cfg.n_units), "learned_n_units": progress.get("n_units"),
        "boundary": progress.get("boundary"),
        "changed_fraction_test": float(states["test"].pairs.changed.float().mean()),
    })
    return DASResult(align, cfg, metrics, m.history, pair_rows(states["test"].pairs, ev["correct"]))


def run_das(
    model: SequenceModel,
    task: Task,
    cfg: DASConfig | None = None,
    pairs: dict[str, CounterfactualPairs] | None = None,
    progress: bool = True,
    train_alignment: bool = True,
    store=None,
    init=None,
    **overrides,
) -> DASResult:
    """Search for an alignment of ``cfg.variable`` of ``cfg.program`` in the frozen ``model``.

    Keywords override fields of ``cfg``. Pairs are made from ``task`` (each split seeded
    from ``cfg.seed``) unless ``pairs`` gives them. ``train_alignment=False`` evaluates the
    alignment as initialised. ``store``: reuse and save results (see ``run_das_batch``).
    ``init``: an alignment (or state dict) to start from (a warm start).
    """
    cfg = DASConfig(**{**(asdict(cfg) if cfg else {}), **overrides})
    return run_das_batch(model, task, [cfg], pairs, progress, train_alignment, store, init=[init])[0]


def subspace_sweep(model: SequenceModel, task: Task, cfg: DASConfig, sizes: Sequence[int], progress: bool = True,
                   store=None, pairs: dict[str, CounterfactualPairs] | None = None, **overrides) -> dict[int, DASResult]:
    """Search every subspace size in ``sizes`` in one batched pass, each under ``cfg``'s stopping
    rule (to convergence, or to the cap: each result says which in ``metrics["converged"]``).

    A boundless config is searched as orthogonal at each size. Sizes wider than the state are dropped.
    ``pairs``, ``store``: as in ``run_das`` (given pairs are used by every size; the store is then
    not consulted, as its key names the pairs by their settings).
    """
    base = replace(cfg, **overrides) if overrides else cfg
    d = state_width(model, base.site)
    sizes = [int(k) for k in sizes if int(k) * base.n_blocks() <= d]
    cfgs = [replace(base, alignment="orthogonal" if base.alignment == "boundless" else base.alignment, n_units=k) for k in sizes]
    return dict(zip(sizes, run_das_batch(model, task, cfgs, pairs, progress=progress, store=store, token_iia=False)))


def save_alignment(path: str | Path, result: DASResult) -> None:
    """Save an alignment and the config that found it (loadable with weights_only)."""
    a = result.alignment
    atomic_torch_save({"format": ALIGNMENT_FORMAT, "describe": json.dumps(a.describe()), "config": json.dumps(asdict(result.config)),
                       "metrics": json.dumps(result.metrics), "history": json.dumps(result.history),
                       "state_dict": a.state_dict()}, path)


def load_alignment(path: str | Path) -> tuple[AlignmentFunction, DASConfig, dict]:
    """Load an alignment saved by ``save_alignment``: (alignment in eval mode, config, metrics)."""
    st = torch.load(path, weights_only=True, map_location="cpu")
    if st.get("format") != ALIGNMENT_FORMAT:
        raise ValueError(f"{path} is not a symlib alignment of this version (format {st.get('format')!r}, expected {ALIGNMENT_FORMAT!r})")
    a = alignment_from_description(json.loads(st["describe"]))
    a.load_state_dict(st["state_dict"])
    return a.eval(), DASConfig(**json.loads(st["config"])), json.loads(st["metrics"])

"""Distributed Alignment Search: the search loop.

The network is frozen; only the alignment function learns, by cross-entropy of the
network's predictions on the counterfactual sequence after the interchange (see the
README's "The science in brief"). States at the intervention sites are computed once.

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

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from .alignment import ALIGNMENT_NAMES, AlignmentFunction, alignment_from_description, make_alignment
from .counterfactuals import VARIABLE_NAMES, CounterfactualPairs, make_splits, split_seed, variable_blocks, wrong_labels
from .iia import PairStates, after_swap, das_loss, evaluate_alignment, frozen, pair_rows, split_metrics
from .models import SequenceModel, check_task
from .programs import PROGRAM_NAMES, make_program
from .tasks import Task
from .utils import atomic_torch_save, check_choice, finish_bar

ALIGNMENT_FORMAT = "symlib-alignment/2"
SPLITS = ("train", "val", "test", "test_heldout")


@dataclass
class DASConfig:
    """One alignment search. Defaults follow the original recipe, except the step budget the
    book states for its chapters (``max_steps``)."""

    program: str = "up_down"
    variable: str = "count"  # count (the program's number variable), phase, count_phase, full, null, or a program variable
    alignment: str = "orthogonal"
    n_units: int = 16  # dims of each aligned block (boundless: ignored, see boundless_init)
    site: Optional[str] = None  # default: the model's default site
    lr: float = 1e-3
    batch_size: int = 128
    n_train: int = 10_000
    n_val: int = 1_000  # stop the search and choose the best alignment
    n_test: int = 1_000  # only for the reported numbers
    n_test_heldout: int = 0  # test pairs on held-out counts (4, 9, 14, 17); 0: none
    max_steps: int = 20_000
    eval_every: int = 50
    target_iia: float = 0.995  # stop once validation trial IIA reaches this (>1: never)
    patience: int = 10  # ... or once validation loss has not improved for this many evaluations (0: never)
    loss_on: str = "all"  # "all": every non-pad token after the swap (the original); "task_mask": task-mask tokens only
    relabel: bool = False  # the wrong-label control: a fixed permutation of the swapped values, trained and tested on
    seed: int = 0
    boundless_init: Optional[float] = None  # boundless: starting size in dims (None: its default)
    boundless_penalty: Optional[float] = None  # boundless: cost per swapped dim (None: its default)

    def __post_init__(self):
        check_choice("program", self.program, PROGRAM_NAMES)
        check_choice("variable", self.variable, VARIABLE_NAMES)
        check_choice("alignment function", self.alignment, ALIGNMENT_NAMES)
        check_choice("loss_on", self.loss_on, ("all", "task_mask"))
        if self.n_units < 0:
            raise ValueError(f"n_units must be >= 0, got {self.n_units}")
        for name in ("batch_size", "n_train", "n_val", "n_test", "max_steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
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
class DASResult:
    """What a search returns: the chosen alignment, its config, metrics and history.

    metrics: ``iia_test``, ``iia_changed_test``, ``iia_token_test`` (and ``_val``,
    ``_test_heldout``), ``steps``, ``best_step``, ``seconds``, ``stopped_because``,
    ``n_units`` (boundless: the learned size; ``boundary`` its continuous value), ...
    rows: per test pair, numpy arrays (values swapped, counts, ``correct``) for breakdowns.
    """

    alignment: AlignmentFunction
    config: DASConfig
    metrics: dict
    history: list = field(default_factory=list)
    rows: dict = field(default_factory=dict)


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


def _init_state(a) -> dict | None:
    """An alignment or state dict to start from, as a CPU state dict (None stays None)."""
    if a is None:
        return None
    sd = a.state_dict() if hasattr(a, "state_dict") else a
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


def _start_alignment(cfg: DASConfig, d: int, init: dict | None) -> AlignmentFunction:
    """A fresh alignment for ``cfg``, loaded with ``init``'s weights when one is given."""
    align = new_alignment(cfg, d)
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


class _Member:
    """One alignment being searched inside a batch."""

    def __init__(self, cfg: DASConfig, align: AlignmentFunction, states: dict[str, PairStates]):
        self.cfg, self.align, self.states = cfg, align, states
        self.gen = torch.Generator().manual_seed(split_seed(cfg.seed, "batches"))
        self.perm, self.cursor = torch.randperm(len(states["train"]), generator=self.gen), 0
        self.history: list[dict] = []
        self.best_key, self.best_state, self.best_step = None, None, 0
        self.since_best, self.best_loss = 0, math.inf
        self.stopped, self.steps, self.seconds = None, 0, 0.0

    def next_indices(self) -> torch.Tensor:
        n, b = len(self.states["train"]), min(self.cfg.batch_size, len(self.states["train"]))
        if self.cursor + b > n:
            self.perm, self.cursor = torch.randperm(n, generator=self.gen), 0
        idx = self.perm[self.cursor:self.cursor + b]
        self.cursor += b
        return idx

    def record(self, rec: dict) -> None:
        """Log an evaluation; keep the best alignment (validation IIA, then loss) and decide on stopping."""
        self.history.append(rec)
        cfg, own_rule = self.cfg, getattr(self.align, "stops_on_own_rule", False)
        key = (rec["val_iia"], -rec["val_loss"])
        if own_rule or self.best_key is None or key > self.best_key:
            # a boundless search keeps its last alignment: its size is what converged
            self.best_key, self.best_step = key, rec["step"]
            self.best_state = copy.deepcopy(self.align.state_dict())
        if own_rule:
            self.stopped = self.align.stop_reason(self.history)
            return
        if rec["val_iia"] >= cfg.target_iia:
            self.stopped = f"validation trial IIA >= {cfg.target_iia}"
            return
        if rec["val_loss"] < self.best_loss - 1e-4:
            self.best_loss, self.since_best = rec["val_loss"], 0
        else:
            self.since_best += 1
            if cfg.patience and self.since_best >= cfg.patience:
                self.stopped = f"validation loss plateaued for {cfg.patience} evaluations"


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


def _concat_batch(parts: list[tuple]) -> tuple:
    """Stack several members' batches (tokens, task_mask, pos, ...) into one, padding to the longest."""
    L = max(p[0].shape[1] for p in parts)
    pad = lambda x: F.pad(x, (0, L - x.shape[1]))
    tokens = torch.cat([pad(p[0]) for p in parts])
    mask = torch.cat([pad(p[1]) for p in parts])
    pos = torch.cat([p[2] for p in parts])
    return tokens, mask, pos


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
    init = [None] * len(cfgs) if init is None else [_init_state(a) for a in init]
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
    from .store import resolve_store
    store = resolve_store(store)
    results: list[DASResult | None] = [None] * len(cfgs)
    keys = [None] * len(cfgs)
    if store is not None and pairs is None:
        for i, c in enumerate(cfgs):
            keys[i] = store.key(model, task, c, trained=train_alignment, init=init[i])
            results[i] = store.get(keys[i])
    todo = [i for i, r in enumerate(results) if r is None]
    if not todo:
        return results
    t_start = time.perf_counter()
    states = _states_for(model, task, [cfgs[i] for i in todo], [site_of[i] for i in todo], pairs)
    dev = model.device
    members = [_Member(cfgs[i], _start_alignment(cfgs[i], widths[i], init[i]).to(dev), st) for i, st in zip(todo, states)]
    trainable = [m for m in members if train_alignment and (m.cfg.n_units > 0 or m.cfg.alignment == "boundless")]
    for m in members:
        if m not in trainable:
            m.stopped = "not trained (initial alignment)" if not train_alignment else "nothing to train (n_units=0)"
    if trainable:
        _search(model, trainable, site_of[todo[0]] if len(set(site_of)) == 1 else None, [site_of[i] for i in todo],
                members, progress, t_start)
    out = []
    for m in members:
        if m.best_state is not None:
            m.align.load_state_dict(m.best_state)
        m.align.eval()
        j = todo[members.index(m)]
        out.append(_finish(model, m, site_of[j], t_start, token_iia[j]))
    for i, r in zip(todo, out):
        results[i] = r
        if store is not None and keys[i] is not None:
            store.put(keys[i], r)
    return results


def _search(model, active_members, shared_site, member_sites, all_members, progress, t_start):
    """The training loop over the members still searching."""
    site_by_member = {id(m): member_sites[all_members.index(m)] for m in active_members}
    groups = [{"params": g["params"], "lr": g["lr"]} for m in active_members for g in m.align.param_groups(m.cfg.lr)]
    opt = torch.optim.Adam(groups)
    dev = model.device
    max_steps = max(m.cfg.max_steps for m in active_members)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        c = active_members[0].cfg
        desc = f"DAS {c.alignment} {c.variable}" if len(active_members) == 1 else f"DAS x{len(active_members)}"
        bar = tqdm(total=max_steps, desc=desc, unit="step")
    active = list(active_members)
    step = 0
    try:
        with frozen(model):
            while active and step < max_steps:
                for m in active:
                    m.align.train()
                    m.align.on_step(step)
                # members searched at different sites run as separate passes
                loss = 0.0
                losses = {}
                by_site: dict = {}
                for m in active:
                    by_site.setdefault(site_by_member[id(m)], []).append(m)
                for site, ms in by_site.items():
                    parts = [m.states["train"].batch(m.next_indices(), dev) for m in ms]
                    tokens, mask, pos = _concat_batch(parts)
                    # each parametrised rotation is computed once a step, not once per use (a linear
                    # map uses two rotations twice, a revnet's interchange its rotation three times)
                    with parametrize.cached():
                        h = torch.cat([m.align.interchange(p[3], p[4], p[5]) for m, p in zip(ms, parts)])
                    sel = after_swap(tokens, pos)
                    logits = model.run_with_state(tokens, site, pos, h, select=sel)
                    nxt = F.pad(tokens[:, 1:], (0, 1))[sel]
                    on_mask = F.pad(mask[:, 1:], (0, 1))[sel]
                    counts = sel.sum(1)
                    start = 0
                    row0 = 0
                    for m, p in zip(ms, parts):
                        b = p[0].shape[0]
                        n = int(counts[row0:row0 + b].sum())
                        l_m = das_loss(logits[start:start + n], nxt[start:start + n], on_mask[start:start + n], m.cfg.loss_on)
                        losses[id(m)] = float(l_m.detach())
                        loss = loss + l_m + m.align.penalty()
                        start, row0 = start + n, row0 + b
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                if bar is not None:
                    bar.update(1)
                for m in list(active):
                    m.steps = step
                    if step % m.cfg.eval_every == 0 or step >= m.cfg.max_steps:
                        ev = evaluate_alignment(model, m.align, m.states["val"], site_by_member[id(m)], free_running=False)
                        m.align.train()
                        rec = {"step": step, "seconds": round(time.perf_counter() - t_start, 3), "train_loss": losses[id(m)],
                               "val_loss": ev["loss"], "val_iia": ev["iia"], "val_iia_changed": ev["iia_changed"], **m.align.progress()}
                        m.record(rec)
                        if m.stopped is None and step >= m.cfg.max_steps:
                            m.stopped = f"max_steps={m.cfg.max_steps} reached"
                        if m.stopped is not None:
                            m.seconds = time.perf_counter() - t_start
                            active.remove(m)
                            for p in m.align.parameters():
                                p.grad = None
                        if bar is not None and len(all_members) == 1:
                            bar.set_postfix(iia=f"{ev['iia']:.3f}")
        finish_bar(bar)  # every member stopped on its own rule: a finished (green) bar, not an interrupted (red) one
    finally:
        if bar is not None:
            bar.close()


def _finish(model, m: _Member, site, t_start, token_iia: bool = True) -> DASResult:
    """Measure the chosen alignment on the test split(s) and assemble the result."""
    cfg, align = m.cfg, m.align
    metrics = {}
    ev_val = evaluate_alignment(model, align, m.states["val"], site, free_running=False)
    metrics.update({"iia_val": ev_val["iia"], "iia_changed_val": ev_val["iia_changed"]})
    ev = evaluate_alignment(model, align, m.states["test"], site, free_running=token_iia)
    metrics.update(split_metrics(ev, "test"))
    if not token_iia:
        metrics["iia_token_test"] = None
    if "test_heldout" in m.states:
        metrics.update(split_metrics(evaluate_alignment(model, align, m.states["test_heldout"], site, free_running=False), "test_heldout"))
        metrics["iia_token_test_heldout"] = None  # measured teacher-forced only; the free-running token IIA is the test split's
    first_95 = next((r for r in m.history if r["val_iia"] >= 0.95), None)
    progress = align.progress()
    metrics.update({
        "steps": m.steps, "best_step": m.best_step if m.history else 0,
        "seconds": round(m.seconds or (time.perf_counter() - t_start), 3),
        "stopped_because": m.stopped, "seconds_to_iia_0.95": first_95["seconds"] if first_95 else None,
        "n_units": progress.get("n_units", cfg.n_units), "learned_n_units": progress.get("n_units"),
        "boundary": progress.get("boundary"),
        "changed_fraction_test": float(m.states["test"].pairs.changed.float().mean()),
    })
    return DASResult(align, cfg, metrics, m.history, pair_rows(m.states["test"].pairs, ev["correct"]))


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
                   store=None, **overrides) -> dict[int, DASResult]:
    """Search every subspace size in ``sizes`` at the same budget, in one batched pass.

    Every size runs ``max_steps`` steps (no early stop on validation IIA), so the curve
    shows what size buys, not how fast each size converges.
    """
    base = replace(cfg, **overrides) if overrides else cfg
    d = state_width(model, base.site)
    sizes = [int(k) for k in sizes if int(k) * base.n_blocks() <= d]
    cfgs = [replace(base, alignment="orthogonal" if base.alignment == "boundless" else base.alignment,
                    n_units=k, target_iia=2.0, patience=0) for k in sizes]
    return dict(zip(sizes, run_das_batch(model, task, cfgs, progress=progress, store=store, token_iia=False)))


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

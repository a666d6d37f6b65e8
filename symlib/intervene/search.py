"""The search engine: one training loop for every learned intervention in the book.

DAS (one alignment on one network), a batch of DAS searches (a subspace sweep, a search
and its learned controls), Model Alignment Search (one alignment per network, trained
jointly over directions), model stitching (one affine map per direction) and the
counterfactual-latent loss all train here, through ``train``. The modules ``das`` and
``mas`` only build what this loop needs and measure what it returns.

Two pieces describe a search:

- a ``Direction``: counterfactual pairs with the states they need (``PairStates`` per
  split), the frozen target network and site, and the maps that make the intervened
  state (``align.interchange(h_t, h_s, swap, source=source_align)``: a DAS alignment with
  no source map; in MAS the target's alignment with the source network's; a stitching
  map). Each direction draws its training batches from its own seeded generator.
- a ``Search``: the maps that learn and stop together, the directions that supervise them
  by behaviour (cross-entropy of the target network's predictions after the interchange,
  one loss per target network over its directions' tokens) or by the counterfactual-latent
  loss alone (``cl_directions``), its config (``SearchConfig``: ``lr``, ``batch_size``,
  ``max_steps``, ``eval_every`` and the stopping rule) and its record: the validation
  history, the best maps so far, why it stopped and whether it converged.

Each step, every running search draws a batch per direction; the intervened states going
into one (network, site) run through the network in one pass, whichever search they
belong to; one Adam updates every map of every running search. Every ``eval_every`` steps
a search is validated on its validation pairs (mean trial IIA and loss over its
behavioural directions) and decides on its own whether to stop: it has *converged* once its
validation trial IIA reaches ``target_iia`` or its best validation changed-pair IIA has
gained less than ``plateau_tol`` over the last ``plateau_steps`` steps; the cap
(``max_steps``) and the optional loss rule (``patience``) stop it unconverged. With
``lr_drops`` a plateau first divides the search's learning rate by 10 and the search goes on,
judged over a new window, until the drops are spent. Its best maps
(validation IIA, then loss) are the ones it returns. A search that stops no longer trains while the
others go on, so a batch of searches equals the same searches run one by one up to float
error.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import ClassVar, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from ..utils import check_choice, finish_bar
from ..game.counterfactuals import VARIABLE_NAMES
from ..game.programs import PROGRAM_NAMES
from .iia import PairStates, after_swap, das_loss, evaluate_alignment, frozen


#: The book's search budgets, in one place. ``finding``: every number the book calls a finding
#: comes from searches run to convergence under this rule (the cap, the original's 20 000 steps,
#: only guards against a search that never settles; a result that reaches it says
#: ``converged=False``). ``illustration``: a chapter that only illustrates may stop at a smaller,
#: stated cap. ``smoke``: the test suite's tiny size.
BUDGETS: dict[str, dict] = {
    "finding": dict(max_steps=20_000, plateau_steps=1_000, plateau_tol=0.005, eval_every=50,
                    n_train=10_000, n_val=1_000, n_test=1_000),
    "illustration": dict(max_steps=600, plateau_steps=1_000, plateau_tol=0.005, eval_every=50,
                         n_train=10_000, n_val=1_000, n_test=1_000),
    "smoke": dict(max_steps=20, eval_every=10, n_train=256, n_val=128, n_test=128),
}


@dataclass
class SearchConfig:
    """What every search shares (``DASConfig`` and ``MASConfig`` add their own fields): the
    variable searched, the alignment function, the pairs, the optimiser and the stopping rule."""

    program: str = "up_down"
    variable: str = "count"  # count (the program's number variable), phase, count_phase, full, null, or a program variable
    alignment: str = "orthogonal"
    n_units: int = 16  # dims of each aligned block
    lr: float = 1e-3
    batch_size: int = 128
    n_train: int = 10_000  # training pairs (the loss)
    n_val: int = 1_000  # validation pairs: stop the search and choose the best alignment
    n_test: int = 1_000  # test pairs: only for the reported numbers
    max_steps: int = 20_000  # the cap; a search that reaches it has not converged (``converged`` False)
    eval_every: int = 50
    target_iia: float = 0.995  # converged once validation trial IIA reaches this (>1: never)
    plateau_steps: int = 1_000  # ... or once the best validation changed-pair IIA has gained
    plateau_tol: float = 0.005  # ... less than plateau_tol over the last plateau_steps steps (0: never)
    patience: int = 0  # also stop once validation loss has not improved for this many evaluations (0: never)
    lr_drops: int = 0  # on a plateau, divide lr by 10 and go on, this many times, before a plateau counts as converged
    relabel: bool = False  # the wrong-label control: a fixed permutation of the swapped values, trained and tested on
    normalise: bool = False  # z-score each network's states (statistics of its natural states) before the map, undo after
    seed: int = 0

    #: the alignment functions this kind of search accepts, and what an error calls them
    ALIGNMENTS: ClassVar[tuple] = ()
    ALIGNMENT_KIND: ClassVar[str] = "alignment function"
    MIN_UNITS: ClassVar[int] = 0
    POSITIVE: ClassVar[tuple] = ("batch_size", "n_train", "n_val", "n_test", "max_steps", "eval_every")

    def __post_init__(self):
        check_choice("program", self.program, PROGRAM_NAMES)
        check_choice("variable", self.variable, VARIABLE_NAMES)
        if self.ALIGNMENTS:
            check_choice(self.ALIGNMENT_KIND, self.alignment, self.ALIGNMENTS)
        self._check_own()
        if self.n_units < self.MIN_UNITS:
            raise ValueError(f"n_units must be >= {self.MIN_UNITS}, got {self.n_units}")
        for name in self.POSITIVE:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("plateau_steps", "patience", "lr_drops"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: never), got {getattr(self, name)}")
        if not 0 <= self.plateau_tol < 1:
            raise ValueError(f"plateau_tol is a gain in IIA and must be in [0, 1), got {self.plateau_tol}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.lr_drops and not self.plateau_steps:
            raise ValueError(f"lr_drops={self.lr_drops} drops the learning rate on a plateau, and plateau_steps=0 never sees one")

    def _check_own(self) -> None:
        """Checks of a subclass's own choices, run before the numeric checks."""


def cl_loss(h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The counterfactual-latent loss ``0.5 * (MSE + (1 - cos))`` averaged over rows.

    h, target: (N, d) intervened and natural states."""
    if h.shape[0] == 0:
        return h.sum() * 0.0
    mse = ((h - target) ** 2).mean(1)
    cos = F.cosine_similarity(h, target, dim=1, eps=1e-8)
    return (0.5 * (mse + (1 - cos))).mean()


def concat_batch(parts: list[tuple]) -> tuple:
    """Stack several directions' batches (tokens, task_mask, pos, ...) into one, padding to the longest."""
    L = max(p[0].shape[1] for p in parts)
    pad = lambda x: F.pad(x, (0, L - x.shape[1]))
    tokens = torch.cat([pad(p[0]) for p in parts])
    mask = torch.cat([pad(p[1]) for p in parts])
    pos = torch.cat([p[2] for p in parts])
    return tokens, mask, pos


class Direction:
    """Pairs on one frozen target network and the maps that intervene on it.

    model, site: the target network and its site; states: split -> ``PairStates`` (a dict,
    or a function computing a split on first use); align: the map whose ``interchange``
    makes the intervened state; source_align: the source network's map (MAS), else None;
    batch_seed: the seed of this direction's training-batch order. ``cl`` holds, per split,
    the natural states the counterfactual-latent loss pulls toward: (H (N, d), matched (N,)).
    """

    def __init__(self, model, site: str, states, align: nn.Module, source_align: nn.Module | None = None,
                 batch_seed: int = 0, name: str = ""):
        self.model, self.site, self.align, self.source_align, self.name = model, site, align, source_align, name
        self._states = states if isinstance(states, dict) else {}
        self._compute = None if isinstance(states, dict) else states
        self.gen = torch.Generator().manual_seed(int(batch_seed))
        self.perm, self.cursor = None, 0
        self.cl: dict = {}

    def st(self, split: str) -> PairStates:
        """The pairs of ``split`` with their states (computed on first use when a function was given)."""
        if split not in self._states:
            if self._compute is None:
                raise KeyError(f"no {split!r} pairs in this direction")
            self._states[split] = self._compute(split)
        return self._states[split]

    def has(self, split: str) -> bool:
        return split in self._states or self._compute is not None

    def next_indices(self, b: int) -> torch.Tensor:
        """The next ``b`` training rows: a seeded shuffle, reshuffled when it runs out: (b,)."""
        n = len(self.st("train"))
        if self.perm is None:
            self.perm = torch.randperm(n, generator=self.gen)
        b = min(b, n)
        if self.cursor + b > n:
            self.perm, self.cursor = torch.randperm(n, generator=self.gen), 0
        idx = self.perm[self.cursor:self.cursor + b]
        self.cursor += b
        return idx

    def interchange(self, h_t: torch.Tensor, h_s: torch.Tensor, swap: torch.Tensor) -> torch.Tensor:
        """The intervened target states: h_t (B, d), h_s (B, d_s), swap (B, n_blocks) -> (B, d)."""
        return self.align.interchange(h_t, h_s, swap, source=self.source_align)

    def evaluate(self, split: str, free_running: bool = False, loss_on: str = "all") -> dict:
        """``evaluate_alignment`` of this direction's maps on ``split`` (``loss_on``: the tokens its loss scores)."""
        return evaluate_alignment(self.model, self.align, self.st(split), self.site, free_running=free_running,
                                  source_align=self.source_align, loss_on=loss_on)

    @torch.no_grad()
    def cl_value(self, split: str) -> float | None:
        """The counterfactual-latent loss on the matched pairs of ``split`` (maps in eval mode), or None."""
        if split not in self.cl:
            return None
        H, ok = self.cl[split]
        st = self.st(split)
        dev = self.model.device
        idx = torch.nonzero(ok)[:, 0]
        if len(idx) == 0:
            return None
        maps = [m for m in (self.align, self.source_align) if m is not None]
        was = [m.training for m in maps]
        for m in maps:
            m.eval()
        try:
            h = self.interchange(st.H_t[idx].to(dev), st.H_s[idx].to(dev), st.pairs.swap[idx].to(dev))
            return float(cl_loss(h, H[idx].to(dev)))
        finally:
            for m, w in zip(maps, was):
                m.train(w)


class SearchResult:
    """What every search returns, whatever it searched (``das.DASResult``, ``mas.MASResult``, the
    stitching baseline's ``MASResult``):

    - ``config``: the search's config (a ``SearchConfig``);
    - ``metrics``: one flat dict: numbers measured on a split are named ``<what>_<split>``
      (``iia_changed_test``, ``iia_val``, ...), beside ``steps``, ``best_step``, ``seconds``,
      ``stopped_because`` and ``converged``;
    - ``history``: the validation curve, one dict per evaluation (``step``, ``val_iia``, ...);
    - ``maps``: the learned maps by name (DAS: ``{"alignment": ...}``; MAS: one alignment per
      network; stitching: one map per ``"source>target"``);
    - ``to_frame()``: its test numbers as a DataFrame, one row per direction measured (DAS: one
      row, the network into itself, named by ``to_frame(name)``), with the search's ``steps``
      and ``converged`` on every row, so results of different recipes concatenate into one table.
    """

    #: the columns ``to_frame`` puts first, for every kind of result
    FRAME_COLUMNS: ClassVar[tuple] = ("source", "target", "program", "variable", "alignment", "n_units",
                                      "iia_test", "iia_changed_test", "steps", "converged")

    @property
    def converged(self) -> bool | None:
        """True: stopped by the convergence rule; False: by the cap or the loss rule; None: not trained."""
        return self.metrics.get("converged")

    @property
    def stopped_because(self) -> str | None:
        return self.metrics.get("stopped_because")

    @property
    def steps(self) -> int:
        return self.metrics.get("steps", 0)

    @property
    def maps(self) -> dict:
        raise NotImplementedError

    def curve(self):
        """The validation curve as a DataFrame (one row per evaluation)."""
        import pandas as pd
        return pd.DataFrame(self.history)

    def _frame_rows(self) -> list[dict]:
        raise NotImplementedError

    def _what(self) -> dict:
        """Overrides of the config's description on every row (stitching: no alignment function)."""
        return {}

    def to_frame(self, name: str | None = None):
        """Test numbers, one row per measured direction, the columns of ``FRAME_COLUMNS`` first.
        ``name``: the network's name in ``source`` and ``target`` where the result has one network (DAS)."""
        import pandas as pd
        c = self.config
        what = {"source": name, "target": name, "program": c.program, "variable": c.variable, "alignment": c.alignment,
                "n_units": c.n_units, **self._what()}
        rows = [{**what, **r, "steps": self.steps, "converged": self.converged} for r in self._frame_rows()]
        df = pd.DataFrame(rows)
        first = [c for c in self.FRAME_COLUMNS if c in df.columns]
        return df[first + [c for c in df.columns if c not in first]]


class Search:
    """Maps that learn and stop together, the directions that train them, and their record.

    cfg: anything with ``lr``, ``batch_size``, ``max_steps``, ``eval_every``, ``target_iia``
    and ``patience``; maps: name -> module (its parameters learn; alignment-function hooks
    ``on_step``, ``penalty``, ``progress``, ``param_groups`` and ``stop_reason`` are used when
    present); directions: behavioural; cl_directions: trained by the CL loss only; cl_eps: the
    CL loss's weight on behavioural directions that have CL targets; loss_on: which tokens
    the behavioural loss scores ("all" or "task_mask"); split_batch: each step draws
    ``batch_size`` pairs per target network, spread over its directions (MAS), instead of
    ``batch_size`` per direction.
    """

    #: what a drop of the learning rate (``lr_drops``) multiplies it by
    LR_DROP: ClassVar[float] = 0.1

    def __init__(self, cfg, maps: dict, directions: Sequence[Direction] = (), cl_directions: Sequence[Direction] = (),
                 cl_eps: float = 0.0, loss_on: str = "all", split_batch: bool = False):
        self.cfg, self.maps = cfg, dict(maps)
        self.directions, self.cl_directions = list(directions), list(cl_directions)
        self.cl_eps, self.loss_on, self.split_batch = float(cl_eps), loss_on, split_batch
        # behavioural directions grouped by target network (one loss each), in order of first appearance
        self.by_target: dict = {}
        for d in self.directions:
            self.by_target.setdefault(id(d.model), []).append(d)
        self.history: list[dict] = []
        self.best_key, self.best_state, self.best_step = None, None, 0
        self.since_best, self.best_loss = 0, math.inf
        self.stopped: str | None = None
        self.converged: bool | None = None  # None: not trained
        self.steps, self.seconds = 0, 0.0
        self.drops_left, self.lr_scale, self.window_from = getattr(cfg, "lr_drops", 0), 1.0, 0
        own = [m for m in self.maps.values() if getattr(m, "stops_on_own_rule", False)]
        self.own_rule = own[0] if own else None

    # ---- what the loop asks of a search ----

    def param_groups(self) -> list[dict]:
        out = []
        for m in self.maps.values():
            if hasattr(m, "param_groups"):
                out += [{"params": g["params"], "lr": g["lr"]} for g in m.param_groups(self.cfg.lr)]
            else:
                out.append({"params": list(m.parameters()), "lr": self.cfg.lr})
        return out

    def batch_size(self, d: Direction) -> int:
        if self.split_batch:
            return max(1, self.cfg.batch_size // len(self.by_target[id(d.model)]))
        return self.cfg.batch_size

    def start_step(self, step: int) -> None:
        for m in self.maps.values():
            m.train()
            if hasattr(m, "on_step"):
                m.on_step(step)

    def penalty(self):
        return sum(m.penalty() for m in self.maps.values() if hasattr(m, "penalty"))

    def progress(self) -> dict:
        out = {}
        for m in self.maps.values():
            if hasattr(m, "progress"):
                out.update(m.progress())
        return out

    def release(self) -> None:
        """Drop the gradients of a stopped search, so the optimiser leaves its maps alone."""
        for m in self.maps.values():
            for p in m.parameters():
                p.grad = None

    @torch.no_grad()
    def validate(self) -> dict:
        """Validation numbers that decide stopping: mean trial IIA, changed-pair IIA and loss over
        the behavioural directions (the CL loss over the CL-only ones when there are none)."""
        cl_vals = [d.cl_value("val") for d in self.cl_directions if d.cl]
        if not self.directions:
            return {"val_iia": 0.0, "val_loss": float(np.mean(cl_vals)) if cl_vals else 0.0, "val_cl": cl_vals}
        evs = [d.evaluate("val", loss_on=self.loss_on) for d in self.directions]
        for m in self.maps.values():
            m.train()
        if len(evs) == 1:
            out = {"val_loss": evs[0]["loss"], "val_iia": evs[0]["iia"], "val_iia_changed": evs[0]["iia_changed"]}
        else:
            changed = [e["iia_changed"] for e in evs if e["iia_changed"] is not None]
            out = {"val_iia": float(np.mean([e["iia"] for e in evs])), "val_loss": float(np.mean([e["loss"] for e in evs])),
                   "val_iia_changed": float(np.mean(changed)) if changed else None}
        if cl_vals:
            out["val_cl"] = float(np.mean(cl_vals))
        return out

    def plateau_gain(self) -> float | None:
        """How much the best validation score has gained over the last ``plateau_steps`` steps
        (None while the history is shorter than that). The score is the changed-pair IIA (trial
        IIA where no pair changed; minus the CL loss for a search trained by the CL loss alone).
        A running best, so noise can only delay the verdict, never bring it early."""
        window = self.cfg.plateau_steps
        if not window or not self.history or self.history[-1]["step"] - self.window_from < window:
            return None
        now = self.history[-1]["step"]
        since = [r for r in self.history if r["step"] >= self.window_from]  # after a drop of the learning rate, a new window
        best_now = best_then = -math.inf
        for r in since:
            v = _score(r, bool(self.directions))
            best_now = max(best_now, v)
            if r["step"] <= now - window:
                best_then = max(best_then, v)
        if best_then == -math.inf:  # no evaluation at or before the window's start: measure from the first one
            best_then = _score(since[0], bool(self.directions))
        return best_now - best_then

    def record(self, rec: dict) -> None:
        """Log an evaluation; keep the best maps (validation IIA, then loss) and decide on stopping.

        A search converges when its validation trial IIA reaches ``target_iia`` or its best
        validation changed-pair IIA has gained less than ``plateau_tol`` over the last
        ``plateau_steps`` steps (a boundless alignment: when its own rule says its size
        converged). The loss rule (``patience``) and the cap (``max_steps``) stop a search without
        calling it converged, unless the plateau test holds at that point too."""
        self.history.append(rec)
        cfg = self.cfg
        key = (rec["val_iia"], -rec["val_loss"])
        if self.own_rule is not None or self.best_key is None or key > self.best_key:
            # a boundless search keeps its last alignment: its size is what converged
            self.best_key, self.best_step = key, rec["step"]
            self.best_state = {k: copy.deepcopy(m.state_dict()) for k, m in self.maps.items()}
        if self.own_rule is not None:
            self.stopped = self.own_rule.stop_reason(self.history)
            self.converged = True if self.stopped else None
            return
        if self.directions and rec["val_iia"] >= cfg.target_iia:
            self.stopped, self.converged = f"converged: validation trial IIA >= {cfg.target_iia}", True
            return
        gain = self.plateau_gain()
        if gain is not None and gain < cfg.plateau_tol and self.drops_left:
            # a plateau at this learning rate: go on at a tenth of it, judged over a new window
            self.drops_left -= 1
            self.lr_scale *= self.LR_DROP
            self.window_from = rec["step"]
            rec["lr_scale"] = self.lr_scale
            return
        if gain is not None and gain < cfg.plateau_tol:
            what = "changed-pair IIA" if self.directions else "CL loss"
            self.stopped = (f"converged: best validation {what} gained {max(gain, 0.0):.4f} < {cfg.plateau_tol} "
                            f"over the last {cfg.plateau_steps} steps")
            self.converged = True
            return
        if rec["val_loss"] < self.best_loss - 1e-4:
            self.best_loss, self.since_best = rec["val_loss"], 0
        else:
            self.since_best += 1
            if cfg.patience and self.since_best >= cfg.patience:
                self.stopped = f"validation loss plateaued for {cfg.patience} evaluations (not converged in IIA)"
                self.converged = False

    def hit_cap(self) -> None:
        """Stop at ``max_steps``: not converged (the plateau test, run at this evaluation, did not hold)."""
        if self.stopped is None:
            self.stopped, self.converged = f"max_steps={self.cfg.max_steps} reached before convergence", False

    def restore_best(self) -> None:
        """Load the best maps found and put every map in eval mode."""
        if self.best_state is not None:
            for k, m in self.maps.items():
                m.load_state_dict(self.best_state[k])
        for m in self.maps.values():
            m.eval()


def _score(rec: dict, behavioural: bool) -> float:
    """The validation number convergence is judged on (see ``Search.plateau_gain``)."""
    if not behavioural:
        return -rec["val_loss"]
    v = rec.get("val_iia_changed")
    return rec["val_iia"] if v is None else v


def _cl_term(d: Direction, idx: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    H, ok = d.cl["train"]
    keep = ok[idx]
    return cl_loss(h[keep.to(h.device)], H[idx][keep].to(h.device))


def train(searches: Sequence[Search], progress: bool = True, desc: str = "search", t_start: float | None = None,
          show_iia: bool = False) -> None:
    """Train every search until each stops (its rule, or its ``max_steps``); each ends holding its best maps.

    ``t_start``: the clock the history's ``seconds`` count from (default: now).
    ``show_iia``: show the validation IIA on the progress bar (when there is one search).
    """
    t_start = time.perf_counter() if t_start is None else t_start
    searches = list(searches)
    if not searches:
        return
    groups = {id(s): s.param_groups() for s in searches}
    opt = torch.optim.Adam([g for s in searches for g in groups[id(s)]])
    first = 0
    for s in searches:  # each search's groups in the optimiser, with their learning rates as configured
        n = len(groups[id(s)])
        groups[id(s)] = [(g, g["lr"]) for g in opt.param_groups[first:first + n]]
        first += n
    bar = None
    max_steps = max(s.cfg.max_steps for s in searches)
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=max_steps, desc=desc, unit="step")
    models = {id(d.model): d.model for s in searches for d in s.directions + s.cl_directions}
    active, step = list(searches), 0
    try:
        with all_frozen(models.values()):
            while active and step < max_steps:
                for s in active:
                    s.start_step(step)
                loss, losses = _step_loss(active)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                if bar is not None:
                    bar.update(1)
                for s in list(active):
                    s.steps = step
                    if step % s.cfg.eval_every == 0 or step >= s.cfg.max_steps:
                        rec = {"step": step, "seconds": round(time.perf_counter() - t_start, 3), "train_loss": losses[id(s)]}
                        rec.update(s.validate())
                        rec.update(s.progress())
                        s.record(rec)
                        if "lr_scale" in rec:  # this evaluation dropped the search's learning rate
                            for g, lr in groups[id(s)]:
                                g["lr"] = lr * s.lr_scale
                        if step >= s.cfg.max_steps:
                            s.hit_cap()
                        if s.stopped is not None:
                            s.seconds = time.perf_counter() - t_start
                            active.remove(s)
                            s.release()
                        if bar is not None and show_iia:
                            bar.set_postfix(iia=f"{rec['val_iia']:.3f}")
        finish_bar(bar)  # every search stopped on its own rule: a finished (green) bar, not an interrupted one
    finally:
        if bar is not None:
            bar.close()
    for s in searches:
        if s.stopped is None:
            s.hit_cap()
            s.seconds = time.perf_counter() - t_start
        s.restore_best()


def _step_loss(active: list[Search]) -> tuple[torch.Tensor, dict]:
    """One step's loss over every running search, and each search's own (without penalties)."""
    # every behavioural batch going into one (network, site) runs through it in one pass
    groups: dict = {}  # (model id, site) -> [(search, direction)]
    for s in active:
        for d in s.directions:
            groups.setdefault((id(d.model), d.site), []).append((s, d))
    # a search's loss terms, per target network: its CL terms, then its behavioural loss
    terms: dict = {id(s): {} for s in active}
    # each parametrised rotation is computed once a step, not once per use
    with parametrize.cached():
        for items in groups.values():
            model, site = items[0][1].model, items[0][1].site
            parts, hs = [], []
            for s, d in items:
                idx = d.next_indices(s.batch_size(d))
                p = d.st("train").batch(idx, model.device)
                h = d.interchange(p[3], p[4], p[5])
                slot = terms[id(s)].setdefault(id(model), [])
                if s.cl_eps and d.cl:
                    slot.append(s.cl_eps * _cl_term(d, idx, h))
                parts.append(p)
                hs.append(h)
            tokens, mask, pos = concat_batch(parts)
            sel = after_swap(tokens, pos)
            logits = model.run_with_state(tokens, site, pos, torch.cat(hs), select=sel)
            nxt = F.pad(tokens[:, 1:], (0, 1))[sel]
            on_mask = F.pad(mask[:, 1:], (0, 1))[sel]
            counts = sel.sum(1)
            # one loss per search and target network, over the tokens of its directions into it
            start, row0, i = 0, 0, 0
            while i < len(items):
                s = items[i][0]
                j = i
                while j < len(items) and items[j][0] is s:
                    j += 1
                b = sum(parts[k][0].shape[0] for k in range(i, j))
                n = int(counts[row0:row0 + b].sum())
                terms[id(s)][id(model)].append(
                    das_loss(logits[start:start + n], nxt[start:start + n], on_mask[start:start + n], s.loss_on))
                start, row0, i = start + n, row0 + b, j
        for s in active:
            for d in s.cl_directions:
                idx = d.next_indices(s.cfg.batch_size)
                p = d.st("train").batch(idx, d.model.device)
                terms[id(s)].setdefault("cl", []).append(_cl_term(d, idx, d.interchange(p[3], p[4], p[5])))
    total = 0.0
    losses = {}
    for s in active:
        flat = [t for slot in terms[id(s)].values() for t in slot]
        l_s = sum(flat[1:], flat[0]) if flat else torch.zeros(())
        losses[id(s)] = float(l_s.detach())
        total = total + l_s + s.penalty()
    return total, losses


class all_frozen:
    """Every model frozen (eval mode, no parameter gradients) for the duration."""

    def __init__(self, models):
        self.cms = [frozen(m) for m in models]

    def __enter__(self):
        for c in self.cms:
            c.__enter__()

    def __exit__(self, *a):
        for c in reversed(self.cms):
            c.__exit__(*a)

"""Model Alignment Search (MAS): one alignment per network, swaps between networks.

DAS asks whether *one* network holds a program's variable. MAS asks whether *several*
networks hold it in a way that can be exchanged: each network ``n`` gets its own invertible
alignment ``A_n`` (widths may differ), and an interchange goes from a source network ``s``
to a target network ``t``: the source state is mapped by ``A_s``, its aligned block written
into ``A_t(h_t)``, mapped back by ``A_t``'s inverse, and network ``t`` continues from there.
The label is what ``t``'s program does with the swapped-in value. All alignments train
together over a chosen set of (source, target) directions, the diagonal (s = t, plain DAS)
included; every network stays frozen. Cross-network IIA (source x target, on test pairs,
chance-corrected on the changed pairs) is a causal, directed similarity measure.

The counterfactual-latent (CL) loss (``cl_eps``) adds a second kind of supervision: the
intervened state of ``t`` is pulled toward a *natural* state of ``t`` whose program state
is the counterfactual one, by ``0.5 * (MSE + (1 - cos))``. Directions in
``cl_directions`` get only that loss: no gradient ever runs through the target network's
behaviour, as for a network that cannot be run forward from an edited state.

Baselines on the same pairs and states: ``run_stitching`` (the whole target state replaced
by a learned affine map of the source state) and, in ``similarity``, RSA and linear CKA.
States of every network are computed once per pair set.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from types import SimpleNamespace
from typing import ClassVar, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ..utils import choose_names, check_choice
from ..game.counterfactuals import CounterfactualPairs, make_splits, shared_variables, split_seed, value_variable, variable_blocks, wrong_labels
from ..game.programs import Program, make_program, state_at
from ..game.tasks import Task, make_task
from ..networks.models import SequenceModel, check_task
from . import search
from .alignment import NormalisedAlignment, make_alignment, natural_statistics
from .das import as_state_dict
from .iia import PairStates, frozen, site_states
from .search import cl_loss  # noqa: F401  (mas.cl_loss: the CL loss, where MAS readers look for it)

#: Alignment functions MAS accepts: those whose interchange can take another network's map.
MAS_ALIGNMENTS = ("orthogonal", "linear", "affine")


@dataclass
class MASNetwork:
    """A frozen network in a MAS search: a name, the model, the task it learned, the site
    aligned (the model's default when None) and the program its labels come from (the
    search's program when None)."""

    name: str
    model: SequenceModel
    task: Task
    site: str | None = None
    program: str | None = None

    def __post_init__(self):
        if isinstance(self.task, str):
            self.task = make_task(self.task)
        self.site = self.model.check_site(self.site)

    @property
    def width(self) -> int:
        return self.model.state_size(self.site)


@dataclass
class MASConfig(search.SearchConfig):
    """One MAS search (the shared fields are ``search.SearchConfig``'s, budgets included: to
    convergence, capped at 20 000 steps, as a DAS search). ``directions``: "all"
    (every source x target), "self" (the diagonal only: one DAS per network, trained together)
    or a list of (source, target) names. ``cl_directions``: directions trained only by the
    counterfactual-latent loss (not also in ``directions``). ``cl_eps``: weight of the CL loss
    on the behavioural directions (0: none). ``batch_size``: pairs per target network per
    step, spread over its sources."""

    directions: str | list = "all"
    cl_directions: list = field(default_factory=list)
    cl_eps: float = 0.0
    n_pool: int = 2_000  # trials whose states are the natural states the CL loss pulls toward

    ALIGNMENTS: ClassVar[tuple] = MAS_ALIGNMENTS
    ALIGNMENT_KIND: ClassVar[str] = "MAS alignment function"
    MIN_UNITS: ClassVar[int] = 1
    POSITIVE: ClassVar[tuple] = search.SearchConfig.POSITIVE + ("n_pool",)

    def __post_init__(self):
        super().__post_init__()
        if self.cl_eps < 0:
            raise ValueError(f"cl_eps must be >= 0, got {self.cl_eps}")
        if isinstance(self.directions, str):
            check_choice("directions", self.directions, ("all", "self"))
        else:
            self.directions = [tuple(d) for d in self.directions]
        self.cl_directions = [tuple(d) for d in self.cl_directions]


@dataclass
class MASResult(search.SearchResult):
    """What a MAS search returns (the fields every search result has: ``search.SearchResult``).

    names: the networks in order; alignments: name -> alignment; table: one row per
    (source, target) direction with ``iia_test``, ``iia_changed_test``, ``iia_val``,
    ``initial_iia_test``, ``initial_iia_changed_test`` (the untrained alignments on the same
    pairs: the control), ``trained_by`` ("behaviour", "cl" or "none") and, when the CL
    loss is on, ``cl_test`` (its value on test pairs) and ``cl_matched`` (the fraction of
    pairs with a natural state to pull toward); metrics: steps, seconds, stopped_because,
    converged (see ``search.Search.record``); history: the validation curve.
    """

    names: list[str]
    alignments: dict
    config: MASConfig
    table: pd.DataFrame
    metrics: dict
    history: list = field(default_factory=list)
    kind: str = "mas"  # or "stitching" (``run_stitching``: affine maps of whole states, keyed "source>target")

    @property
    def maps(self) -> dict:
        return self.alignments

    def _what(self) -> dict:
        return {"alignment": "stitching", "n_units": None} if self.kind == "stitching" else {}

    def _frame_rows(self) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "converged"} for r in self.table.to_dict("records")]

    def matrix(self, column: str = "iia_changed_test") -> np.ndarray:
        """``column`` as a (source x target) matrix in the order of ``names`` (NaN where not measured)."""
        M = np.full((len(self.names), len(self.names)), np.nan)
        for r in self.table.itertuples():
            M[self.names.index(r.source), self.names.index(r.target)] = getattr(r, column)
        return M


# ---------------------------------------------------------------- checks

def as_networks(networks) -> list[MASNetwork]:
    """Accept MASNetwork objects, (name, model, task[, site]) tuples or a {name: (model, task[, site])} dict."""
    if isinstance(networks, dict):
        networks = [(k, *v) if isinstance(v, tuple) else (k, v) for k, v in networks.items()]
    out = [n if isinstance(n, MASNetwork) else MASNetwork(*n) for n in networks]
    if len(out) < 1:
        raise ValueError("MAS needs at least one network")
    names = [n.name for n in out]
    dup = sorted({x for x in names if names.count(x) > 1})
    if dup:
        raise ValueError(f"network names must be unique; repeated: {', '.join(dup)}")
    for n in out:
        check_task(n.model, n.task)
    return out


def _program(net: MASNetwork, cfg: MASConfig) -> Program:
    return make_program(net.program or cfg.program, net.task)


def resolve_directions(names: Sequence[str], spec, what: str = "directions") -> list[tuple[str, str]]:
    """The (source, target) pairs ``spec`` names: "all", "self" or a list; unknown names raise."""
    if spec == "all":
        return [(s, t) for s in names for t in names]
    if spec == "self":
        return [(n, n) for n in names]
    out = []
    for d in spec:
        if len(d) != 2:
            raise ValueError(f"each of {what} is a (source, target) pair of network names, got {d!r}")
        for x in d:
            if x not in names:
                raise ValueError(f"{what} name network {x!r}, which is not in this search; networks: {', '.join(names)}")
        out.append((d[0], d[1]))
    return list(dict.fromkeys(out))


def check_mas(nets: list[MASNetwork], cfg: MASConfig) -> tuple[list, list]:
    """Check a search before anything runs; return (behavioural directions, CL-only directions)."""
    names = [n.name for n in nets]
    beh = resolve_directions(names, cfg.directions)
    cl = resolve_directions(names, cfg.cl_directions, "cl_directions") if cfg.cl_directions else []
    both = sorted(set(beh) & set(cl))
    if both:
        raise ValueError(f"directions {both} are in both directions and cl_directions; a direction is trained one way")
    if not beh and not cl:
        raise ValueError("nothing to train: directions and cl_directions are both empty")
    progs = {n.name: _program(n, cfg) for n in nets}
    lacking = []
    for n in nets:
        try:
            variable_blocks(progs[n.name], cfg.variable)
        except ValueError:
            lacking.append(f"{n.name} ({progs[n.name].name} on {n.task.name})")
    if lacking:
        common = [v for v in progs[nets[0].name].variables if all(v in p.variables for p in progs.values())]
        raise ValueError(f"variable {cfg.variable!r} is not a variable of every network's program: "
                         f"{', '.join(lacking)} lack(s) it; variables they share: {', '.join(common) or 'none'}")
    for s, t in beh + cl:
        shared_variables(progs[t], progs[s], cfg.variable)
    k = cfg.n_units * len(variable_blocks(_program(nets[0], cfg), cfg.variable))
    narrow = min(nets, key=lambda n: n.width)
    if k > narrow.width:
        raise ValueError(f"n_units={cfg.n_units} ({k} dims) is wider than network {narrow.name!r} ({narrow.width} dims at "
                         f"{narrow.site}); widths: {', '.join(f'{n.name} {n.width}' for n in nets)}")
    return beh, cl


# ---------------------------------------------------------------- pairs and states

class _PairSet:
    """The pairs of one (source task, target task, programs) combination, and states per network."""

    def __init__(self, splits: dict[str, CounterfactualPairs]):
        self.splits = splits
        self.states: dict = {}  # (network name, side, split) -> (N, d)

    def state(self, net: MASNetwork, side: str, split: str) -> torch.Tensor:
        key = (net.name, side, split)
        if key not in self.states:
            p = self.splits[split]
            tok, pos = (p.tokens, p.pos) if side == "target" else (p.src_tokens, p.src_pos)
            self.states[key] = site_states(net.model, tok, pos, net.site)
        return self.states[key]

    def pair_states(self, src: MASNetwork, tgt: MASNetwork, split: str) -> PairStates:
        return PairStates(self.splits[split], self.state(tgt, "target", split), self.state(src, "source", split))


def _pair_sets(nets, cfg, directions, splits=("train", "val", "test")):
    """One pair set per distinct (source task+program, target task+program); the same seed as a DAS
    search with the same settings, so diagonal pairs equal DAS pairs."""
    by = {n.name: n for n in nets}
    sets: dict = {}
    of: dict = {}
    relabel = wrong_labels(seed=cfg.seed) if cfg.relabel else None
    for s, t in directions:
        S, T = by[s], by[t]
        key = (S.task.name, S.program or cfg.program, T.task.name, T.program or cfg.program)
        if key not in sets:
            same = key[0] == key[2] and key[1] == key[3]
            sp = make_splits(T.task, T.program or cfg.program, cfg.variable, cfg.seed, cfg.n_train, cfg.n_val, cfg.n_test,
                             relabel=relabel, source_task=None if same else S.task,
                             source_program=None if same else (S.program or cfg.program))
            sets[key] = _PairSet({k: v for k, v in sp.items() if k in splits})
        of[(s, t)] = sets[key]
    return of


# ---------------------------------------------------------------- counterfactual-latent targets

def _state_keys(prog: Program, trace: dict) -> torch.Tensor:
    """Each program state as a row of its fields' values (every field of ``trace``, in name
    order): fields of shape S -> (*S, n_fields) int64. Rows compare exactly, whatever the
    number of fields or their ranges (``cl_targets`` matches them)."""
    return torch.stack([trace[k].long() for k in sorted(trace)], -1)


def counterfactual_states(pairs: CounterfactualPairs, prog: Program, variable: str) -> dict:
    """The program state of each pair right after the interchange (every field), (N,) each."""
    tr = prog.trace(SimpleNamespace(tokens=pairs.tokens, counts=pairs.target_count))
    s = state_at(tr, pairs.pos)
    num = value_variable(prog, variable)
    for b, names in enumerate(variable_blocks(prog, variable)):
        for var in names:
            if var == num:
                v = pairs.source_value
            elif var == "phase":
                v = pairs.source_phase
            else:
                raise ValueError(f"the CL loss supports count-like variables and phase, not {var!r}")
            s = prog.write(s, var, v, pairs.swap[:, b])
    return prog.after_intervention(s)


def natural_pool(net: MASNetwork, prog: Program, n_trials: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """States of ``net`` at every demo and response position of fresh trials, with their
    program-state keys: (keys (M, n_fields), H (M, d))."""
    g = torch.Generator().manual_seed(split_seed(seed, "cl_pool"))
    trials = net.task.sample(int(n_trials), "train", g, unk_p=0.0)
    with frozen(net.model), torch.no_grad():
        S = net.model.states(trials.tokens.to(net.model.device), net.site).float().cpu()
    keep = trials.demo_response_mask()
    keys = _state_keys(prog, prog.trace(trials))
    return keys[keep], S[keep]


def cl_targets(keys_needed: torch.Tensor, pool_keys: torch.Tensor, pool_H: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each needed key, one pool state with that key (chosen at random, seeded):
    (H (N, d), matched (N,) bool; unmatched rows are zeros).

    keys_needed (N, F) and pool_keys (M, F): program states as rows (``_state_keys``); or (N,)
    and (M,) integer keys."""
    if keys_needed.dim() == 2:  # rows -> one integer id per distinct row, shared by both sides
        ids = torch.unique(torch.cat([pool_keys, keys_needed]), dim=0, return_inverse=True)[1]
        pool_keys, keys_needed = ids[:len(pool_keys)], ids[len(pool_keys):]
    g = torch.Generator().manual_seed(seed)
    order = torch.argsort(pool_keys, stable=True)
    sk = pool_keys[order]
    lo = torch.searchsorted(sk, keys_needed, right=False)
    hi = torch.searchsorted(sk, keys_needed, right=True)
    n = hi - lo
    matched = n > 0
    pick = lo + (torch.rand(len(keys_needed), generator=g) * n.clamp(min=1)).long().clamp(max=(n - 1).clamp(min=0))
    pick = torch.where(matched, pick, torch.zeros_like(pick)).clamp(max=max(len(sk) - 1, 0))
    H = pool_H[order[pick]] if len(sk) else torch.zeros(len(keys_needed), pool_H.shape[1])
    H = torch.where(matched[:, None], H, torch.zeros_like(H))
    return H, matched


# ---------------------------------------------------------------- the search loop

def _direction(by: dict, maps: dict, pset: _PairSet, s: str, t: str, seed: int) -> search.Direction:
    """Direction (source ``s``, target ``t``) intervening with ``maps``: a stitching map keyed
    ``"s>t"`` when there is one, else the target's alignment with the source's."""
    src, tgt = by[s], by[t]
    stitch = maps.get(f"{s}>{t}")
    align, source = (stitch, None) if stitch is not None else (maps[t], None if s == t else maps[s])
    return search.Direction(tgt.model, tgt.site, lambda split: pset.pair_states(src, tgt, split), align, source,
                            batch_seed=split_seed(seed, f"batches:{s}>{t}"), name=f"{s}>{t}")


def _directions(by: dict, maps: dict, psets: dict, seed: int) -> dict:
    return {(s, t): _direction(by, maps, pset, s, t, seed) for (s, t), pset in psets.items()}


def _setup(nets, cfg, beh, cl, evaluate_all: bool):
    by = {n.name: n for n in nets}
    names = [n.name for n in nets]
    measured = resolve_directions(names, "all") if evaluate_all else list(dict.fromkeys(beh + cl))
    psets = _pair_sets(nets, cfg, list(dict.fromkeys(measured + beh + cl)))
    return by, names, measured, psets


def _attach_cl(nets, cfg, dirs: dict, psets: dict, which: Sequence[tuple]) -> None:
    """Natural target states for the CL loss on the directions ``which``."""
    pools = {}
    by = {n.name: n for n in nets}
    for s, t in which:
        net = by[t]
        prog = _program(net, cfg)
        if t not in pools:
            pools[t] = natural_pool(net, prog, cfg.n_pool, cfg.seed)
        keys, H = pools[t]
        d = dirs[(s, t)]
        for sp in ("train", "val", "test"):
            need = _state_keys(prog, counterfactual_states(psets[(s, t)].splits[sp], prog, cfg.variable))
            d.cl[sp] = cl_targets(need, keys, H, split_seed(cfg.seed, f"cl:{sp}"))


# ---------------------------------------------------------------- caching

def _cache_key(kind: str, nets: list[MASNetwork], cfg: MASConfig, **extra) -> str:
    from .store import make_key, model_fingerprint
    return make_key({"kind": kind, "config": asdict(cfg), **extra,
                     "networks": [[n.name, model_fingerprint(n.model), n.task.name, n.site, n.program] for n in nets]})


def _cache_get(store, key: str, make_map) -> MASResult | None:
    entry = store.load_entry(key, kind="mas")
    if entry is None:
        return None
    meta, states, _ = entry
    maps = {}
    for k, sd in states.items():
        maps[k] = make_map(k, sd)
        maps[k].load_state_dict(sd)
        maps[k].eval()
    c = meta["config"]
    cfg = MASConfig(**{**c, "directions": c["directions"] if isinstance(c["directions"], str) else [tuple(x) for x in c["directions"]]})
    return MASResult(meta["names"], maps, cfg, pd.DataFrame(meta["table"], columns=meta["columns"]), dict(meta["metrics"], cached=True),
                     meta["history"], meta.get("kind", "mas"))


def _cache_put(store, key: str, res: MASResult) -> None:
    record = {"names": res.names, "config": asdict(res.config), "table": res.table.to_dict("records"),
              "columns": list(res.table.columns), "metrics": res.metrics, "history": res.history, "kind": res.kind}
    store.save_entry(key, record, {k: m.state_dict() for k, m in res.alignments.items()}, kind="mas")


def _check_init(init, names: Sequence[str]) -> dict:
    """``init`` as {network name: CPU state dict}; names that are not networks raise."""
    if init is None:
        return {}
    if not isinstance(init, dict):
        raise ValueError(f"init must be a dict {{network name: alignment or state dict}}, got {type(init).__name__}")
    unknown = [k for k in init if k not in names]
    if unknown:
        raise ValueError(f"init names {', '.join(map(repr, unknown))}, not a network of this search; "
                         f"the networks are {', '.join(map(repr, names))}")
    return {k: as_state_dict(v) for k, v in init.items() if v is not None}


def _load_init(m: nn.Module, sd: dict, name: str) -> None:
    """Load a starting alignment into network ``name``'s map: a MAS alignment of the same kind, or,
    into a normalised map, the bare alignment inside it (its statistics stay this network's)."""
    target = m.inner if isinstance(m, NormalisedAlignment) and not any(k in ("mean", "std") for k in sd) else m
    try:
        target.load_state_dict(sd)
    except RuntimeError as e:
        raise ValueError(f"the alignment to start network {name!r} from does not fit this search: {e}") from None


def run_mas(networks, cfg: MASConfig | None = None, progress: bool = True, evaluate_all: bool = True,
            controls: bool = True, store=None, init: dict | None = None, **overrides) -> MASResult:
    """Search one alignment per network, jointly, over ``cfg``'s directions.

    networks: ``MASNetwork`` objects, (name, model, task[, site]) tuples or a dict
    {name: (model, task[, site])}. Every check (names, tasks and programs sharing the
    variable, sizes, directions) runs before any state is computed. ``evaluate_all``:
    measure every source x target direction on test pairs, trained or not (the matrix).
    ``controls``: MAS's one control, ``initial`` (True or "initial"; False or None: none), as
    controls are named everywhere in symlib: the untrained alignments measured on the same pairs
    (``initial_iia_*``). ``store``: a results store (True: the default one) where searches
    are cached under the networks' weights and the config. ``init``: {network name: alignment
    or state dict} to start those networks' alignments from (a warm start, as ``run_das``'s;
    the ``initial`` control is then the starting alignments). Keywords override fields of ``cfg``.
    """
    controls = bool(choose_names(controls, ("initial",), "MAS control"))
    from .store import resolve_store
    cfg = MASConfig(**{**(asdict(cfg) if cfg else {}), **overrides})
    nets = as_networks(networks)
    beh, cl = check_mas(nets, cfg)
    init = _check_init(init, [n.name for n in nets])
    if cfg.relabel and (cl or cfg.cl_eps > 0):
        raise ValueError("the wrong-label control (relabel=True) trains on behaviour only; set cl_eps=0 and no cl_directions")
    store = resolve_store(store)
    n_blocks = len(variable_blocks(_program(nets[0], cfg), cfg.variable))

    def new_map(n: MASNetwork, stats: bool = True):
        a = make_alignment(cfg.alignment, n.width, [cfg.n_units] * n_blocks, seed=split_seed(cfg.seed, f"alignment:{n.name}"))
        if not cfg.normalise:
            return a
        # statistics of the network's natural states; a cached search loads its own over these
        return NormalisedAlignment(a, *natural_statistics(n.model, n.task, n.site)) if stats else NormalisedAlignment(a)
    key = None
    if store is not None:
        from .store import tensors_fingerprint
        key = _cache_key("mas", nets, cfg, evaluate_all=evaluate_all, controls=controls,
                         **({"init": {k: tensors_fingerprint(v) for k, v in sorted(init.items())}} if init else {}))
        by_name = {n.name: n for n in nets}
        hit = _cache_get(store, key, lambda k, sd: new_map(by_name[k], stats=False))
        if hit is not None:
            return hit
    t_start = time.perf_counter()
    by, names, measured, psets = _setup(nets, cfg, beh, cl, evaluate_all)
    dev = nets[0].model.device
    maps = {n.name: new_map(n) for n in nets}
    for k, sd in init.items():
        _load_init(maps[k], sd, k)
    maps = {k: m.to(dev) for k, m in maps.items()}
    initial = {k: copy.deepcopy(m) for k, m in maps.items()} if controls else None
    dirs = _directions(by, maps, psets, cfg.seed)
    if cl or cfg.cl_eps > 0:
        _attach_cl(nets, cfg, dirs, psets, cl + (beh if cfg.cl_eps > 0 else []))
    srch = search.Search(cfg, maps, [dirs[d] for d in beh], [dirs[d] for d in cl], cl_eps=cfg.cl_eps, split_batch=True)
    search.train([srch], progress, f"MAS x{len(nets)} ({len(beh)}+{len(cl)} directions)", show_iia=True)
    steps, stopped, seconds, best_step = srch.steps, srch.stopped, srch.seconds, srch.best_step
    rows = []
    initial_dirs = _directions(by, initial, psets, cfg.seed) if initial is not None else None
    for s, t in measured:
        d = dirs[(s, t)]
        ev, ev_val = d.evaluate("test"), d.evaluate("val")
        row = {"source": s, "target": t, "iia_test": ev["iia"], "iia_changed_test": ev["iia_changed"], "iia_val": ev_val["iia"],
               "trained_by": "behaviour" if (s, t) in beh else "cl" if (s, t) in cl else "none",
               "n_test": ev["n"], "n_changed_test": ev["n_changed"], "converged": srch.converged}
        if initial is not None:
            ev0 = initial_dirs[(s, t)].evaluate("test")
            row.update({"initial_iia_test": ev0["iia"], "initial_iia_changed_test": ev0["iia_changed"]})
        if d.cl:
            row["cl_test"] = d.cl_value("test")
            row["cl_matched"] = float(d.cl["test"][1].float().mean())
        rows.append(row)
    metrics = {"steps": steps, "best_step": best_step, "seconds": round(seconds, 3),
               "total_seconds": round(time.perf_counter() - t_start, 3), "stopped_because": stopped, "converged": srch.converged,
               "directions": [list(d) for d in beh], "cl_directions": [list(d) for d in cl]}
    for m in maps.values():
        m.eval()
    res = MASResult(names, maps, cfg, pd.DataFrame(rows), metrics, srch.history)
    if key is not None:
        _cache_put(store, key, res)
    return res


# ---------------------------------------------------------------- stitching baseline

class _Stitch(nn.Module):
    """A learned affine map from a source network's whole state to a target's whole state:
    the target's own state is discarded (model stitching)."""

    def __init__(self, d_s: int, d_t: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(d_s, d_t)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(d_t, d_s, generator=g) / math.sqrt(d_s))
            self.lin.bias.zero_()

    def interchange(self, h_t, h_s, swap, source=None):
        return self.lin(h_s.float()).to(h_t.dtype)


def run_stitching(networks, cfg: MASConfig | None = None, progress: bool = True, store=None, **overrides) -> MASResult:
    """Model stitching on the same kind of pairs: for each direction (source, target) an
    affine map replaces the target's *whole* state with one made from the source's state,
    trained on the target's behaviour. The pairs swap every program variable (``full``), the
    only counterfactual a whole-state replacement can be asked to follow. The maps share
    nothing; they train in one loop (one pass per target network per step) and stop together.
    Returns a ``MASResult`` whose ``alignments`` are keyed ``"source>target"``, with the
    untrained maps as the control (``initial_iia_*``)."""
    from .store import resolve_store
    cfg = MASConfig(**{**(asdict(cfg) if cfg else {}), **overrides, "variable": "full", "cl_eps": 0.0, "cl_directions": []})
    nets = as_networks(networks)
    beh, _ = check_mas(nets, replace(cfg, n_units=1))
    store = resolve_store(store)
    by = {n.name: n for n in nets}
    new_map = lambda k: _Stitch(by[k.split(">")[0]].width, by[k.split(">")[1]].width, split_seed(cfg.seed, f"stitch:{k}"))
    key = None
    if store is not None:
        key = _cache_key("stitch", nets, cfg)
        hit = _cache_get(store, key, lambda k, sd: new_map(k))
        if hit is not None:
            return hit
    t_start = time.perf_counter()
    by, names, measured, psets = _setup(nets, cfg, beh, [], False)
    dev = nets[0].model.device
    maps = {f"{s}>{t}": new_map(f"{s}>{t}").to(dev) for s, t in beh}
    initial = copy.deepcopy(maps)
    dirs, initial_dirs = _directions(by, maps, psets, cfg.seed), _directions(by, initial, psets, cfg.seed)
    srch = search.Search(cfg, maps, [dirs[d] for d in beh], split_batch=True)
    search.train([srch], progress, f"stitching ({len(beh)} directions)", show_iia=True)
    steps, stopped, seconds, best_step = srch.steps, srch.stopped, srch.seconds, srch.best_step
    rows = []
    for s, t in beh:
        d = dirs[(s, t)]
        ev, ev0 = d.evaluate("test"), initial_dirs[(s, t)].evaluate("test")
        rows.append({"source": s, "target": t, "iia_test": ev["iia"], "iia_changed_test": ev["iia_changed"],
                     "initial_iia_test": ev0["iia"], "initial_iia_changed_test": ev0["iia_changed"], "trained_by": "behaviour",
                     "n_test": ev["n"], "n_changed_test": ev["n_changed"], "converged": srch.converged})
    for m in maps.values():
        m.eval()
    metrics = {"steps": steps, "best_step": best_step, "seconds": round(seconds, 3), "stopped_because": stopped,
               "converged": srch.converged,
               "total_seconds": round(time.perf_counter() - t_start, 3), "directions": [list(d) for d in beh]}
    res = MASResult(names, maps, cfg, pd.DataFrame(rows), metrics, srch.history, kind="stitching")
    if key is not None:
        _cache_put(store, key, res)
    return res

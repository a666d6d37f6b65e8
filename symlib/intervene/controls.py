"""Controls: what an IIA would be without a real variable, on the same test pairs.

Each control is computed for the same alignment function as the search it controls and
measured on the same test pairs (the same target and source trials and positions):

- ``no_swap``: the network left alone. How often the counterfactual is what the network
  does anyway: the chance level of *raw* IIA. On the changed pairs it is 0 by
  construction for a network that solves the task, so it never counts as a control there.
- ``initial``: the alignment the search started from, untrained (a fresh one, for
  boundless at the learned size; for a warm start, the alignment it started from).
- ``wrong_labels``: the search trained and tested on labels whose swapped values went
  through a fixed derangement of the values they take on the training counts (counts
  0..20 among themselves; a lone phase flipped; ``counterfactuals.wrong_labels``). Every
  relabelled counterfactual is a sequence the network can produce (``natural_state_iia``
  checks it), so the control can score: an alignment expressive enough to fit any
  labelling scores high here too; a real variable does not.
- ``wrong_program``: the same search against another program's labels.

Two numbers per control on changed pairs (``run_das_with_controls``):
``iia_changed_test``, on the control's *own* changed pairs (where its labels differ from
what the target would do anyway), and ``iia_changed_main``, on the *main search's* changed
pairs (the same test pairs, restricted to those where the main search's counterfactual
changed), the rate over the same subset as the main search's own changed-pair IIA.

The untrained-network control of earlier versions is gone: an untrained network cannot
answer ``R ... R E`` whatever is swapped in, so it scores 0 and controls nothing.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, replace

import numpy as np
import torch
import torch.nn as nn

from ..utils import choose_names
from ..game.counterfactuals import intervened_state, make_pairs, split_seed, variable_blocks, wrong_labels
from ..game.programs import Program, make_program
from ..game.tasks import Task
from ..networks.models import SequenceModel
from .das import DASConfig, DASResult, make_search_pairs, run_das_batch, start_alignment
from .iia import PairStates, evaluate_alignment, frozen, site_states

CONTROL_NAMES: tuple[str, ...] = ("no_swap", "initial", "wrong_labels", "wrong_program")
#: Controls that can score above 0 on changed pairs; the chance-corrected margin is taken over
#: every one of these that was run (the wrong program included where it is a control).
CHANGED_CONTROLS: tuple[str, ...] = ("initial", "wrong_labels", "wrong_program")
#: Learnable controls measured in full (with the free-running token IIA, like a main search):
#: the wrong-program control *is* the other program's own search, so measured in full it
#: answers that program's search from the results store (a comparison table's other row).
FULL_CONTROLS: tuple[str, ...] = ("wrong_program",)
#: The program each program's wrong-program control uses.
WRONG_PROGRAM: dict[str, str] = {"up_down": "up_up", "up_up": "up_down", "ctx_distr": "up_down"}


def wrong_program_config(cfg: DASConfig, task: Task) -> DASConfig:
    """The same search against another program (its own variable of the same name, else its count)."""
    other = WRONG_PROGRAM[cfg.program]
    variable = cfg.variable
    try:
        variable_blocks(make_program(other, task), variable)
    except ValueError:
        variable = "count"
    return replace(cfg, program=other, variable=variable)


def control_configs(cfg: DASConfig, task: Task, names=CONTROL_NAMES) -> dict[str, DASConfig]:
    """The learnable controls of a search, as search configs."""
    out = {}
    if "wrong_labels" in names:
        out["wrong_labels"] = replace(cfg, relabel=True)
    if "wrong_program" in names:
        out["wrong_program"] = wrong_program_config(cfg, task)
    return out


def _test_numbers(ev: dict, prefix: str = "test") -> dict:
    return {f"iia_{prefix}": ev["iia"], f"iia_changed_{prefix}": ev["iia_changed"]}


def fixed_controls(model: SequenceModel, task: Task, result: DASResult, states: dict[str, PairStates] | None = None,
                   start=None) -> dict:
    """The controls that need no training, on the result's own test pairs: no swap and the initial alignment.

    start: the alignment the search started from (a warm start: an alignment or its state
    dict); None: the fresh alignment a search of ``result.config`` starts from (boundless at
    the size the search learned). Both are measured on the main search's own test pairs, so
    their ``iia_changed_main`` is their ``iia_changed_test``.
    """
    cfg = result.config
    site = model.check_site(cfg.site)
    states = states or {name: PairStates.compute(model, p, site) for name, p in make_search_pairs(task, cfg).items() if name.startswith("test")}
    init = start_alignment(model, task, cfg, init=start)  # as the search builds it (normalised when asked)
    if start is None and cfg.alignment == "boundless":
        init.set_size(result.metrics["boundary"])  # the initial rotation at the size the search learned
    out = {"no_swap": {}, "initial": {}}
    for split, st in states.items():
        if not split.startswith("test"):
            continue
        off = torch.zeros_like(st.pairs.swap)
        out["no_swap"].update(_test_numbers(evaluate_alignment(model, init, st, site, free_running=False, swap=off), split))
        out["initial"].update(_test_numbers(evaluate_alignment(model, init, st, site, free_running=False), split))
    for c in out.values():
        if "iia_changed_test" in c:
            c["iia_changed_main"] = c["iia_changed_test"]
    return out


_TRIAL_ROWS = ("target_count", "source_count", "target_phase", "source_phase", "swap")


def _main_changed(task: Task, main: DASResult) -> np.ndarray:
    """(n_test,) bool: the main search's changed test pairs."""
    if main.rows and "changed" in main.rows:
        return np.asarray(main.rows["changed"], dtype=bool)
    return make_search_pairs(task, main.config)["test"].changed.numpy().astype(bool)


def _same_test_trials(main: DASResult, control: DASResult) -> bool:
    """Whether a control was tested on the main search's test trials, positions and swaps.

    ``make_pairs`` draws every trial, position and swap choice before any program runs, so
    the same seed, number of test pairs, task and number of blocks give the same pairs
    whatever the program or relabelling; the per-pair rows are compared as a check.
    """
    m, c = main.config, control.config
    if (m.seed, m.n_test, m.n_blocks()) != (c.seed, c.n_test, c.n_blocks()):
        return False
    a, b = main.rows or {}, control.rows or {}
    if "correct" not in b or "changed" not in a or len(b["correct"]) != len(a["changed"]):
        return False
    return all(k in a and k in b and np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in _TRIAL_ROWS)


def iia_changed_main(model: SequenceModel, task: Task, main: DASResult, control: DASResult) -> float | None:
    """A learnable control's IIA on the *main search's* changed test pairs (None if there are none).

    The control is scored against its own labels (relabelled, or the other program's), on
    the main search's test pairs restricted to those whose counterfactual under the *main*
    search's labels differs from what the target would do anyway. A control searched with
    the main search's pair settings was tested on those very pairs, so its per-pair results
    are read off; otherwise its alignment is measured on pairs made from the main search's
    test trials (its seed and size) with the control's labels.
    """
    changed = _main_changed(task, main)
    if _same_test_trials(main, control):
        correct = np.asarray(control.rows["correct"], dtype=bool)
    else:
        m, c = main.config, control.config
        pairs = make_pairs(task, c.program, c.variable, n=m.n_test, counts="train", seed=split_seed(m.seed, "test"),
                           relabel=wrong_labels(seed=c.seed) if c.relabel else None)
        align = control.alignment.to(model.device)
        correct = evaluate_alignment(model, align, pairs, c.site, free_running=False)["correct"].numpy().astype(bool)
    return float(correct[changed].mean()) if changed.any() else None


def _best(ctl: dict, key: str):
    scored = [ctl[c][key] for c in CHANGED_CONTROLS if c in ctl and ctl[c].get(key) is not None]
    return max(scored) if scored else None


def run_das_with_controls(model: SequenceModel, task: Task, cfg: DASConfig | None = None, controls=CONTROL_NAMES,
                          progress: bool = True, store=None, full_controls=FULL_CONTROLS, token_iia: bool = True,
                          **overrides) -> DASResult:
    """Search ``cfg`` and its controls (learnable ones in the same batched pass).

    controls: names from ``CONTROL_NAMES`` as a sequence or a comma-separated string, True (all)
    or False/None (none), as everywhere in symlib.

    Returns the main search's result with ``metrics["controls"]``: control name ->
    ``{"iia_test", "iia_changed_test", "iia_changed_main"}`` (and ``_test_heldout``), where
    ``iia_changed_test`` is the control's IIA on its *own* changed test pairs (those its own
    labels change) and ``iia_changed_main`` its IIA on the *main search's* changed test pairs
    (the subset the main search's ``iia_changed_test`` is a rate over; see
    ``iia_changed_main``); ``metrics["control_max_changed_test"]`` and
    ``metrics["control_max_changed_main"]``: the best of each over the controls that can score
    on changed pairs (``CHANGED_CONTROLS``, the wrong program included when it is run).
    full_controls: learnable controls measured in full, with the free-running token IIA
    (default ``FULL_CONTROLS``: the wrong program, which is then that program's own search,
    found in the results store by a later search of it; on a 2-core CPU the token IIA of
    1000 test pairs costs about 30 s for a GRU and 60 s for a Transformer).
    token_iia: measure the main search's free-running token IIA too (False for an illustration
    that reports only IIA on pairs; a cached result without it answers such a search).
    """
    cfg = DASConfig(**{**(asdict(cfg) if cfg else {}), **overrides})
    controls = choose_names(controls, CONTROL_NAMES, "control")
    learn = control_configs(cfg, task, controls)
    results = run_das_batch(model, task, [cfg, *learn.values()], progress=progress, store=store,
                            token_iia=[bool(token_iia)] + [name in full_controls for name in learn])
    main = results[0]
    ctl = {}
    if {"no_swap", "initial"} & set(controls):
        fixed = fixed_controls(model, task, main)
        ctl.update({k: v for k, v in fixed.items() if k in controls})
    for name, res in zip(learn, results[1:]):
        ctl[name] = {k: v for k, v in res.metrics.items() if k.startswith(("iia_test", "iia_changed_test"))}
        ctl[name]["iia_changed_main"] = iia_changed_main(model, task, main, res)
        ctl[name].update({k: res.metrics.get(k) for k in ("steps", "converged", "stopped_because")})
        ctl[name]["config"] = {"program": res.config.program, "variable": res.config.variable, "relabel": res.config.relabel}
    main = copy.copy(main)
    main.metrics = dict(main.metrics)
    main.metrics["controls"] = ctl
    main.metrics["control_max_changed_test"] = _best(ctl, "iia_changed_test")
    main.metrics["control_max_changed_main"] = _best(ctl, "iia_changed_main")
    return main


# ---------------------------------------------------------------- can the wrong-label control score?

class NaturalStateSwap(nn.Module):
    """Stands in for an alignment function in ``evaluate_alignment``: the intervened state is
    the "source" state it is handed, whole (here a natural state chosen for its program state)."""

    def interchange(self, h_t, h_s, swap, source=None):
        return h_s.to(h_t.dtype)


def _variable_keys(prog: Program, state: dict) -> torch.Tensor:
    """Each state as a row of its program variables' values (``prog.variables``): fields of shape
    S -> (*S, n_variables) int64, compared exactly by ``mas.cl_targets``; the trial's ``n`` is left
    out: the network learns it only from where ``T`` comes."""
    return torch.stack([prog.read(state, v).long() for v in prog.variables], -1)


@torch.no_grad()
def natural_state_iia(model: SequenceModel, task: Task, program: str = "up_down", variable: str = "count",
                      relabel: torch.Tensor | None = None, n: int = 1000, seed: int = 0, site: str | None = None,
                      n_pool: int = 500) -> dict:
    """Can the network produce the (relabelled) counterfactuals? The oracle a control is held to.

    For each of ``n`` pairs (``make_pairs`` with ``relabel``, e.g. ``wrong_labels(seed=...)``)
    the target's state at ``pos`` is replaced, whole, by a *natural* state of the network (one
    it reaches on a trial of the training counts) whose program variables have the values the
    counterfactual continues from (``intervened_state``; the trial's N is not matched: the
    network learns it only from where ``T`` comes). A network that solves the task then
    follows the counterfactual (IIA near 1) exactly when every one has such a state: a
    control whose labels pass this check can score; labels that ask for a program state no
    natural trial reaches (a count of 35 in a network trained up to 20) cannot.

    Returns ``iia`` and ``iia_changed`` (a pair with no natural state counts as wrong),
    ``matched`` (the fraction of pairs with a natural state), ``n``, ``n_changed`` and
    ``correct`` ((n,) bool).
    """
    from .mas import cl_targets
    site = model.check_site(site)
    prog = make_program(program, task)
    pairs = make_pairs(task, prog, variable, n=n, counts="train", seed=seed, relabel=relabel)
    g = torch.Generator().manual_seed(split_seed(seed, "natural_pool"))
    trials = task.sample(int(n_pool), "train", g, unk_p=0.0)
    with frozen(model):
        S = model.states(trials.tokens.to(model.device), site).float().cpu()
    idx = torch.arange(trials.tokens.shape[1])[None, :]
    keep = idx < (trials.lengths - 1)[:, None]  # every state a trial passes through before its E
    pool_keys = _variable_keys(prog, prog.trace(trials))[keep]
    need = _variable_keys(prog, intervened_state(prog, variable, pairs, relabel))
    H, matched = cl_targets(need, pool_keys, S[keep], split_seed(seed, "natural_pick"))
    st = PairStates(pairs, site_states(model, pairs.tokens, pairs.pos, site), H)
    ev = evaluate_alignment(model, NaturalStateSwap(), st, site, free_running=False)
    correct = ev["correct"] & matched
    changed = pairs.changed.bool()
    return {"iia": float(correct.float().mean()),
            "iia_changed": float(correct[changed].float().mean()) if changed.any() else None,
            "matched": float(matched.float().mean()), "n": len(pairs), "n_changed": int(changed.sum()), "correct": correct}

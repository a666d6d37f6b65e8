"""Controls: what an IIA would be without a real variable, on the same test pairs.

Each control is computed for the same alignment function as the search it controls and
measured on the same test pairs (the same target and source trials and positions):

- ``no_swap``: the network left alone. How often the counterfactual is what the network
  does anyway: the chance level of *raw* IIA. On the changed pairs it is 0 by
  construction for a network that solves the task, so it never counts as a control there.
- ``initial``: the alignment as initialised, untrained (for boundless, at the learned size).
- ``wrong_labels``: the search trained and tested on labels whose swapped values went
  through a fixed permutation (phase: flipped). An alignment expressive enough to fit any
  labelling scores high here too; a real variable does not.
- ``wrong_program``: the same search against another program's labels.

The untrained-network control of earlier versions is gone: an untrained network cannot
answer ``R ... R E`` whatever is swapped in, so it scores 0 and controls nothing.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, replace

import torch

from .counterfactuals import variable_blocks
from .das import DASConfig, DASResult, make_search_pairs, new_alignment, run_das_batch, state_width
from .iia import PairStates, evaluate_alignment
from .models import SequenceModel
from .programs import make_program
from .tasks import Task

CONTROL_NAMES: tuple[str, ...] = ("no_swap", "initial", "wrong_labels", "wrong_program")
#: Controls that can score above 0 on changed pairs; the chance-corrected margin is taken over these.
CHANGED_CONTROLS: tuple[str, ...] = ("initial", "wrong_labels", "wrong_program")
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


def fixed_controls(model: SequenceModel, task: Task, result: DASResult, states: dict[str, PairStates] | None = None) -> dict:
    """The controls that need no training, on the result's own test pairs: no swap and the initial alignment."""
    cfg = result.config
    site = model.check_site(cfg.site)
    states = states or {name: PairStates.compute(model, p, site) for name, p in make_search_pairs(task, cfg).items() if name.startswith("test")}
    init = new_alignment(cfg, state_width(model, site)).to(model.device)
    if cfg.alignment == "boundless":
        init.set_size(result.metrics["boundary"])  # the initial rotation at the size the search learned
    out = {"no_swap": {}, "initial": {}}
    for split, st in states.items():
        if not split.startswith("test"):
            continue
        off = torch.zeros_like(st.pairs.swap)
        out["no_swap"].update(_test_numbers(evaluate_alignment(model, init, st, site, free_running=False, swap=off), split))
        out["initial"].update(_test_numbers(evaluate_alignment(model, init, st, site, free_running=False), split))
    return out


def run_das_with_controls(model: SequenceModel, task: Task, cfg: DASConfig | None = None, controls=CONTROL_NAMES,
                          progress: bool = True, store=None, **overrides) -> DASResult:
    """Search ``cfg`` and its controls (learnable ones in the same batched pass).

    Returns the main search's result with ``metrics["controls"]``: control name ->
    ``{"iia_test", "iia_changed_test"}`` (and ``_test_heldout``), and
    ``metrics["control_max_changed_test"]``: the best control on changed pairs among those
    that can score there (``CHANGED_CONTROLS``).
    """
    cfg = DASConfig(**{**(asdict(cfg) if cfg else {}), **overrides})
    for c in controls:
        if c not in CONTROL_NAMES:
            raise ValueError(f"unknown control {c!r}; valid choices: {', '.join(CONTROL_NAMES)}")
    learn = control_configs(cfg, task, controls)
    results = run_das_batch(model, task, [cfg, *learn.values()], progress=progress, store=store,
                            token_iia=[True] + [False] * len(learn))
    main = results[0]
    ctl = {}
    if {"no_swap", "initial"} & set(controls):
        fixed = fixed_controls(model, task, main)
        ctl.update({k: v for k, v in fixed.items() if k in controls})
    for name, res in zip(learn, results[1:]):
        ctl[name] = {k: v for k, v in res.metrics.items() if k.startswith(("iia_test", "iia_changed_test"))}
        ctl[name]["config"] = {"program": res.config.program, "variable": res.config.variable, "relabel": res.config.relabel}
    main = copy.copy(main)
    main.metrics = dict(main.metrics)
    main.metrics["controls"] = ctl
    scored = [ctl[c]["iia_changed_test"] for c in CHANGED_CONTROLS if c in ctl and ctl[c].get("iia_changed_test") is not None]
    main.metrics["control_max_changed_test"] = max(scored) if scored else None
    return main

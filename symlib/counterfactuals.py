"""Counterfactual pairs for interchange interventions (SPEC sections 3 and 5).

A pair is a *target* trial with a position i, a *source* trial with a position j, and
the program's counterfactual: the target run to i, the chosen variables overwritten with
the source's values at j, then rolled out to ``E``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from .programs import Program, counterfactual, intervention_positions, make_program, state_at
from .tasks import Task, Trials, resolve_counts
from .utils import check_choice

VARIABLE_NAMES: tuple[str, ...] = ("count", "phase", "count_phase", "full", "null")


def variable_blocks(program: Program, variable: str) -> list[list[str]]:
    """The program variables each aligned block stands for.

    count: the program's number variable; phase; count_phase: both, in separate blocks;
    full: every swappable variable in one block; null: one block that changes nothing.
    """
    check_choice("variable", variable, VARIABLE_NAMES)
    if variable == "count":
        return [[program.number_variable]]
    if variable == "phase":
        return [["phase"]]
    if variable == "count_phase":
        return [[program.number_variable], ["phase"]]
    if variable == "full":
        return [list(program.variables)]
    return [[]]


@dataclass
class CounterfactualPairs:
    """A set of counterfactual pairs.

    tokens: (N, L) counterfactual sequences; their prefix up to ``pos`` is the target trial.
    task_mask: (N, L) bool, the counterfactual's task mask: the predictable tokens after the intervention.
    pos: (N,) intervention position in the target.
    src_tokens: (N, Ls) source trials; src_pos: (N,) source positions.
    swap: (N, n_blocks) bool, which blocks each pair swaps.
    target_count, source_count: (N,) the trials' demo counts.
    target_value, source_value: (N,) the program's number variable at the two positions.
    target_phase, source_phase: (N,) the phase (0 demo, 1 response) at the two positions.
    changed: (N,) bool, whether the counterfactual differs from the target's own continuation.
    """

    tokens: torch.Tensor
    task_mask: torch.Tensor
    pos: torch.Tensor
    src_tokens: torch.Tensor
    src_pos: torch.Tensor
    swap: torch.Tensor
    target_count: torch.Tensor
    source_count: torch.Tensor
    target_value: torch.Tensor
    source_value: torch.Tensor
    target_phase: torch.Tensor
    source_phase: torch.Tensor
    changed: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, idx) -> "CounterfactualPairs":
        out = CounterfactualPairs(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})
        L = int(((out.tokens != 0).long() * torch.arange(1, out.tokens.shape[1] + 1)).max())
        Ls = int(((out.src_tokens != 0).long() * torch.arange(1, out.src_tokens.shape[1] + 1)).max())
        out.tokens, out.task_mask, out.src_tokens = out.tokens[:, :L], out.task_mask[:, :L], out.src_tokens[:, :Ls]
        return out

    def shuffled_sources(self, generator: torch.Generator | None = None) -> "CounterfactualPairs":
        """The same pairs with sources permuted: labels no longer match the swapped-in state (a control)."""
        p = torch.randperm(len(self), generator=generator)
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for k in ("src_tokens", "src_pos", "source_count", "source_value", "source_phase"):
            d[k] = d[k][p]
        return CounterfactualPairs(**d)


def make_pairs(
    task: Task,
    program: str | Program = "up_down",
    variable: str = "count",
    n: int = 10_000,
    counts="train",
    seed: int = 0,
) -> CounterfactualPairs:
    """Sample ``n`` counterfactual pairs (seeded). Positions are drawn uniformly among demo
    and response tokens, independently for source and target; sources are fresh trials.

    For ``count_phase`` each pair swaps count, phase, or both (a third each).
    """
    counts = resolve_counts(counts)
    prog = make_program(program, task) if isinstance(program, str) else program
    n_blocks = len(variable_blocks(prog, variable))
    g = torch.Generator().manual_seed(seed)
    tgt = task.sample(n, counts, g, unk_p=0.0)
    src = task.sample(n, counts, g, unk_p=0.0)
    pos, spos = intervention_positions(tgt, g), intervention_positions(src, g)
    if n_blocks == 1:
        swap = torch.ones(n, 1, dtype=torch.bool)
    else:
        choice = torch.randint(3, (n,), generator=g)  # 0: first block, 1: second, 2: both
        swap = torch.stack([choice != 1, choice != 0], 1)
    return pairs_from_trials(prog, variable, tgt, pos, src, spos, swap, g)


def pairs_from_trials(prog: Program, variable: str, tgt: Trials, pos: torch.Tensor, src: Trials, spos: torch.Tensor,
                      swap: torch.Tensor | None = None, generator: torch.Generator | None = None) -> CounterfactualPairs:
    """Counterfactual pairs from given target and source trials and positions: (batch,) each.

    swap: (batch, n_blocks) bool, which blocks each pair swaps (default: all).
    """
    blocks = variable_blocks(prog, variable)
    n = len(tgt)
    swap = torch.ones(n, len(blocks), dtype=torch.bool) if swap is None else swap
    ttrace, strace = prog.trace(tgt), prog.trace(src)
    s_state, t_state = state_at(strace, spos), state_at(ttrace, pos)
    values, rows = {}, {}
    for b, names in enumerate(blocks):
        for var in names:
            values[var] = prog.read(s_state, var)
            rows[var] = swap[:, b]
    tokens, task_mask = counterfactual(prog, tgt, pos, values, rows, generator, trace=ttrace)
    # does the counterfactual differ from the target's own continuation?
    L = max(tokens.shape[1], tgt.tokens.shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, L - x.shape[1]))
    ct, tt = pad(tokens), pad(tgt.tokens)
    after = torch.arange(L)[None, :] > pos[:, None]
    tmask = pad(tgt.task_mask) & after
    changed = ((pad(task_mask) != tmask) | ((ct != tt) & (pad(task_mask) | tmask))).any(1)
    num = prog.number_variable
    return CounterfactualPairs(
        tokens=tokens, task_mask=task_mask, pos=pos, src_tokens=src.tokens, src_pos=spos, swap=swap,
        target_count=tgt.counts, source_count=src.counts,
        target_value=prog.read(t_state, num), source_value=prog.read(s_state, num),
        target_phase=prog.read(t_state, "phase"), source_phase=prog.read(s_state, "phase"),
        changed=changed)

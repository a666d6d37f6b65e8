"""Counterfactual pairs for interchange interventions (see docs/science.md).

A pair is a *target* trial with a position i, a *source* trial with a position j, and
the program's counterfactual: the target run to i, the chosen variables overwritten with
the source's values at j, then rolled out to ``E``.

Pairs come in splits (train, val, test, test_heldout), each drawn with its own seed
(``split_seed``); ``make_splits`` builds them all. For the wrong-label control a fixed
derangement (``wrong_labels``) relabels the swapped values (``relabel``): a derangement of
the values a count-like variable takes on the training counts (0..20), so every relabelled
counterfactual is one a network trained on those counts can produce (``intervened_state``
gives the program state it asks for).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, fields
from types import SimpleNamespace

import torch

from .programs import PROGRAMS, Program, counterfactual, intervention_positions, make_program, state_at
from .tasks import TRAIN_COUNTS, Task, Trials, resolve_counts, used_length

#: Variables meaningful for every program.
GENERIC_VARIABLES: tuple[str, ...] = ("count", "phase", "count_phase", "full", "null")
#: Every name a variable may take (for config checks): the generic ones, then each
#: program's own variables (e.g. Up-Up's ``demo_count`` and ``resp_count``). Whether a
#: name fits a given program is checked by ``variable_blocks``.
VARIABLE_NAMES: tuple[str, ...] = GENERIC_VARIABLES + tuple(dict.fromkeys(
    v for p in PROGRAMS.values() for v in p.variables if v not in GENERIC_VARIABLES))


def program_variable_names(program: Program) -> tuple[str, ...]:
    """Return the variable names ``program`` accepts: the generic ones, then its own variables."""
    return GENERIC_VARIABLES + tuple(v for v in program.variables if v not in GENERIC_VARIABLES)


def variable_blocks(program: Program, variable: str) -> list[list[str]]:
    """Return the program variables each aligned block stands for.

    count: the program's number variable; phase; count_phase: both, in separate blocks;
    full: every swappable variable in one block; null: one block that changes nothing;
    any other program variable by name (e.g. Up-Up's ``resp_count``): that variable alone.
    Raises a ValueError listing the valid names when ``program`` has no such variable.
    """
    if variable == "count":
        return [[program.number_variable]]
    if variable == "phase":
        return [["phase"]]
    if variable == "count_phase":
        return [[program.number_variable], ["phase"]]
    if variable == "full":
        return [list(program.variables)]
    if variable == "null":
        return [[]]
    if variable in program.variables:
        return [[variable]]
    raise ValueError(f"unknown variable {variable!r} for program {program.name}; "
                     f"valid choices: {', '.join(program_variable_names(program))}")


def shared_variables(target: Program, source: Program, variable: str) -> list[list[str]]:
    """The blocks of ``variable`` when a ``source`` program's values are written into a
    ``target`` program: every program variable it names must exist in both. Raises a
    ValueError naming the variables the two share otherwise."""
    blocks = variable_blocks(target, variable)
    names = [v for b in blocks for v in b]
    if variable == "full":
        names = list(dict.fromkeys(target.variables + source.variables))
    missing = [v for v in names if v not in source.variables or v not in target.variables]
    if missing:
        both = [v for v in target.variables if v in source.variables]
        raise ValueError(f"variable {variable!r} needs {', '.join(missing)}, which {source.name} on {source.task.name} "
                         f"and {target.name} on {target.task.name} do not both have; variables they share: "
                         f"{', '.join(both) or 'none'}")
    return blocks


def value_variable(program: Program, variable: str) -> str:
    """Return the variable whose values a pair's ``target_value``/``source_value`` hold.

    The swapped variable when it is a single count-like (non-phase) variable, e.g.
    ``resp_count``; else the program's number variable.
    """
    blocks = variable_blocks(program, variable)
    if len(blocks) == 1 and len(blocks[0]) == 1 and blocks[0][0] != "phase":
        return blocks[0][0]
    return program.number_variable


def split_seed(seed: int, split: str) -> int:
    """Return the seed of split ``split`` (e.g. "train", "val") for a run seeded ``seed``.

    It is ``(crc32(split) + seed * 0x9E3779B1) mod 2**32``: stable across Python runs
    (unlike ``hash``), distinct for distinct seeds in [0, 2**32) (the multiplier is odd, so
    seed -> seed * m is one-to-one mod 2**32), distinct for the split names used here, and
    below 2**32, because torch's CPU generator keeps only a seed's low 32 bits (an earlier
    ``seed * 2**32 + crc32(split)`` gave every seed the same pairs). Seed 0 gives crc32(split).
    """
    return (zlib.crc32(split.encode("utf-8")) + int(seed) * 0x9E3779B1) % 2**32


#: The largest value a count-like variable takes on trials with the training counts, at the
#: positions pairs are drawn from (demo and response tokens): Up-Down's count runs
#: 0..max(TRAIN_COUNTS) (up to N in the demo, down from N - 1 in the response), and so do
#: Up-Up's ``demo_count`` and ``resp_count`` and Ctx-Distr's count. (Round-3's count reaches 21
#: only at ``T``, never a pair position; Mod-4's response-phase count stays within 0..3.)
WRONG_LABEL_MAX: int = max(TRAIN_COUNTS)


def wrong_labels(max_value: int = WRONG_LABEL_MAX, seed: int = 0) -> torch.Tensor:
    """Return a fixed derangement of 0..max_value: (max_value + 1,) long, ``perm[v] != v``.

    The default range is the trained one (``WRONG_LABEL_MAX``, 0..20): every relabelled
    value is one the swapped variable takes on natural trials of the training counts, so
    a relabelled counterfactual asks the network for a sequence it can produce (an earlier
    cycle over 0..40 sent about half of the counts to 21..40, which no such network
    answers: a control near 0 by construction).
    Deterministic for ``seed``: a random order of the values, each sent to the next one
    in that order (one cycle through all of them, so no value maps to itself).
    """
    if max_value < 1:
        raise ValueError(f"max_value must be >= 1 for a permutation without fixed points, got {max_value}")
    order = torch.randperm(max_value + 1, generator=torch.Generator().manual_seed(seed))
    perm = torch.empty_like(order)
    perm[order] = order.roll(-1)
    return perm


def _apply_relabel(perm: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Return ``perm[v]``, values outside the permutation's range kept: (batch,)."""
    inside = (v >= 0) & (v < len(perm))
    return torch.where(inside, perm[v.clamp(0, len(perm) - 1)], v)


class PairRows:
    """What sets of pairs share: a dataclass of (N, ...) tensors, one row per pair, and a
    ``value_variable`` name. ``len`` counts the rows; ``rows(idx)`` takes some of them (a slice,
    an index tensor or a bool mask), every tensor alike, padding columns kept."""

    value_variable: str

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def _tensors(self) -> dict:
        """Return the tensor fields by name (every field but ``value_variable``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "value_variable"}

    def rows(self, idx):
        return type(self)(**{k: v[idx] for k, v in self._tensors().items()}, value_variable=self.value_variable)


@dataclass
class CounterfactualPairs(PairRows):
    """A set of counterfactual pairs.

    tokens: (N, L) counterfactual sequences; their prefix up to ``pos`` is the target trial.
    task_mask: (N, L) bool, the counterfactual's task mask: the predictable tokens after the intervention.
    pos: (N,) intervention position in the target.
    src_tokens: (N, Ls) source trials; src_pos: (N,) source positions.
    swap: (N, n_blocks) bool, which blocks each pair swaps.
    target_count, source_count: (N,) the trials' demo counts.
    target_value, source_value: (N,) the values of ``value_variable`` at the two positions:
        the swapped variable when it is one count-like variable (e.g. ``resp_count``), else
        the program's number variable. Under relabelling ``source_value`` stays the true
        value read from the source (what was written is ``relabel[source_value]``).
    target_phase, source_phase: (N,) the phase (0 demo, 1 response) at the two positions.
    changed: (N,) bool, whether the counterfactual differs from the target's own continuation.
    value_variable: the program variable ``target_value``/``source_value`` are values of.
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
    value_variable: str = "count"

    def __getitem__(self, idx) -> "CounterfactualPairs":
        """The pairs ``idx``, without the columns that are padding in all of them."""
        out = self.rows(idx)
        L, Ls = used_length(out.tokens), used_length(out.src_tokens)
        out.tokens, out.task_mask, out.src_tokens = out.tokens[:, :L], out.task_mask[:, :L], out.src_tokens[:, :Ls]
        return out

    def shuffled_sources(self, generator: torch.Generator | None = None) -> "CounterfactualPairs":
        """The same pairs with sources permuted: labels no longer match the swapped-in state (a control)."""
        p = torch.randperm(len(self), generator=generator)
        d = self._tensors()
        for k in ("src_tokens", "src_pos", "source_count", "source_value", "source_phase"):
            d[k] = d[k][p]
        return CounterfactualPairs(**d, value_variable=self.value_variable)


def make_pairs(
    task: Task,
    program: str | Program = "up_down",
    variable: str = "count",
    n: int = 10_000,
    counts="train",
    seed: int = 0,
    relabel: torch.Tensor | None = None,
    source_task: Task | None = None,
    source_program: str | Program | None = None,
) -> CounterfactualPairs:
    """Sample ``n`` counterfactual pairs (seeded). Positions are drawn uniformly among demo
    and response tokens, independently for source and target; sources are fresh trials.
    ``source_task`` / ``source_program``: sources from another task (and its program, by
    default ``program`` on that task), for pairs between networks trained on different
    tasks (MAS): the swapped values are read from the source's program by variable name.

    For ``count_phase`` each pair swaps count, phase, or both (a third each).
    The trials, positions and swap choices are all drawn before any program runs, so the
    same seed, ``n``, ``counts``, task and number of blocks give the same pairs whatever
    the program or ``relabel``: only the labels differ (controls use the same pairs).
    relabel: a permutation for the wrong-label control, see ``pairs_from_trials``.
    """
    counts = resolve_counts(counts)
    prog = make_program(program, task) if isinstance(program, str) else program
    n_blocks = len(variable_blocks(prog, variable))
    src_task = task if source_task is None else source_task
    src_prog = None
    if source_task is not None or source_program is not None:
        sp = program.name if isinstance(program, Program) else program
        sp = sp if source_program is None else source_program
        src_prog = make_program(sp, src_task) if isinstance(sp, str) else sp
    g = torch.Generator().manual_seed(seed)
    tgt = task.sample(n, counts, g, unk_p=0.0)
    src = src_task.sample(n, counts, g, unk_p=0.0)
    pos, spos = intervention_positions(tgt, g), intervention_positions(src, g)
    if n_blocks == 1:
        swap = torch.ones(n, 1, dtype=torch.bool)
    else:
        choice = torch.randint(3, (n,), generator=g)  # 0: first block, 1: second, 2: both
        swap = torch.stack([choice != 1, choice != 0], 1)
    # from here on g only draws the identities of rolled-out demo tokens
    return pairs_from_trials(prog, variable, tgt, pos, src, spos, swap, g, relabel=relabel, source_program=src_prog)


def make_splits(
    task: Task,
    program: str | Program,
    variable: str,
    seed: int,
    n_train: int,
    n_val: int,
    n_test: int,
    n_test_heldout: int = 0,
    relabel: torch.Tensor | None = None,
    source_task: Task | None = None,
    source_program: str | Program | None = None,
) -> dict[str, CounterfactualPairs]:
    """Return the pairs of each split, each drawn with its own seed ``split_seed(seed, name)``.

    "train", "val" and "test" use the training counts; "test_heldout" (only when
    ``n_test_heldout > 0``) has target and source trials on the held-out counts
    (4, 9, 14, 17): does the variable work on counts the network never trained on?
    relabel: the wrong-label permutation, applied to every split (see ``pairs_from_trials``).
    """
    prog = make_program(program, task) if isinstance(program, str) else program
    sizes = {"train": (n_train, "train"), "val": (n_val, "train"), "test": (n_test, "train")}
    if n_test_heldout > 0:
        sizes["test_heldout"] = (n_test_heldout, "heldout")
    return {name: make_pairs(task, prog, variable, n, counts, split_seed(seed, name), relabel, source_task, source_program)
            for name, (n, counts) in sizes.items()}


def swapped_values(source_program: Program, blocks: list[list[str]], s_state: dict, swap: torch.Tensor,
                   relabel: torch.Tensor | None = None) -> tuple[dict, dict]:
    """What an interchange writes: (values, rows), each variable -> (batch,).

    values: each swapped variable's value read from the source state ``s_state`` (through
    ``relabel`` for the wrong-label control: a count-like variable is written as
    ``relabel[v]``, values beyond the permutation kept; a ``phase`` swapped alone is flipped,
    while with other variables it stays the source's). rows: which rows write it (its
    block's column of ``swap``, (batch, n_blocks) bool).
    """
    lone_phase = [name for names in blocks for name in names] == ["phase"]
    values, rows = {}, {}
    for b, names in enumerate(blocks):
        for var in names:
            v = source_program.read(s_state, var)
            if relabel is not None:
                if var != "phase":
                    v = _apply_relabel(relabel, v)
                elif lone_phase:
                    v = 1 - v
            values[var] = v
            rows[var] = swap[:, b]
    return values, rows


def intervened_state(prog: Program, variable: str, pairs: CounterfactualPairs, relabel: torch.Tensor | None = None) -> dict:
    """The program state each pair's counterfactual continues from: the target's state at
    ``pos`` with the swapped variables written from the source's state at ``src_pos``
    (through ``relabel`` for the wrong-label control) and ``after_intervention`` applied.
    Every field, (N,) each. Pairs of one program on one task (not MAS pairs between tasks).
    """
    blocks = variable_blocks(prog, variable)
    # a counterfactual's tokens up to pos are the target's, so its trace there is the target's
    t_state = state_at(prog.trace(SimpleNamespace(tokens=pairs.tokens, counts=pairs.target_count)), pairs.pos)
    s_state = state_at(prog.trace(SimpleNamespace(tokens=pairs.src_tokens, counts=pairs.source_count)), pairs.src_pos)
    values, rows = swapped_values(prog, blocks, s_state, pairs.swap, relabel)
    for var, v in values.items():
        t_state = prog.write(t_state, var, v, rows[var])
    return prog.after_intervention(t_state)


def pairs_from_trials(prog: Program, variable: str, tgt: Trials, pos: torch.Tensor, src: Trials, spos: torch.Tensor,
                      swap: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      relabel: torch.Tensor | None = None, source_program: Program | None = None) -> CounterfactualPairs:
    """Counterfactual pairs from given target and source trials and positions: (batch,) each.

    swap: (batch, n_blocks) bool, which blocks each pair swaps (default: all).
    relabel: (K,) long permutation for the wrong-label control: each swapped count-like
    variable is written as ``relabel[v]`` instead of the source's ``v`` (values >= K are
    kept). A ``phase`` swapped on its own is flipped (1 - v); with ``count_phase`` and
    ``full`` the phase stays the source's. ``changed`` is then against the relabelled
    counterfactual, while ``source_value`` keeps the true source value.
    source_program: the program of the source trials when they come from another task
    (values are read from it by variable name; it must have the variables swapped).
    """
    blocks = variable_blocks(prog, variable)
    sprog = prog if source_program is None else source_program
    if sprog is not prog:
        shared_variables(prog, sprog, variable)
    n = len(tgt)
    swap = torch.ones(n, len(blocks), dtype=torch.bool) if swap is None else swap
    ttrace, strace = prog.trace(tgt), sprog.trace(src)
    s_state, t_state = state_at(strace, spos), state_at(ttrace, pos)
    values, rows = swapped_values(sprog, blocks, s_state, swap, relabel)
    tokens, task_mask = counterfactual(prog, tgt, pos, values, rows, generator, trace=ttrace)
    # does the counterfactual differ from the target's own continuation?
    L = max(tokens.shape[1], tgt.tokens.shape[1])
    pad = lambda x: torch.nn.functional.pad(x, (0, L - x.shape[1]))
    ct, tt = pad(tokens), pad(tgt.tokens)
    after = torch.arange(L)[None, :] > pos[:, None]
    tmask = pad(tgt.task_mask) & after
    changed = ((pad(task_mask) != tmask) | ((ct != tt) & (pad(task_mask) | tmask))).any(1)
    num = value_variable(prog, variable)
    return CounterfactualPairs(
        tokens=tokens, task_mask=task_mask, pos=pos, src_tokens=src.tokens, src_pos=spos, swap=swap,
        target_count=tgt.counts, source_count=src.counts,
        target_value=prog.read(t_state, num), source_value=sprog.read(s_state, num),
        target_phase=prog.read(t_state, "phase"), source_phase=sprog.read(s_state, "phase"),
        changed=changed, value_variable=num)

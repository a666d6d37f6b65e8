"""Interventions at two positions of one trial (a question of the original study's reviewers).

A single interchange intervention swaps a variable into a target trial at one position i
and asks whether the network then does what the program does. Here the variable is
swapped *twice* into the same trial:

1. run the target to position ``i1`` and overwrite the variable(s) with source 1's values
   at ``j1`` (the ordinary single intervention);
2. keep running the *program* on the counterfactual sequence this produces, up to a later
   position ``i2``; there overwrite the variable(s) again, now with source 2's values at
   ``j2``;
3. roll the program out to ``E``.

The network side (``double_intervention_iia``) does the same with states: the aligned
block(s) of the target's state at ``i1`` are replaced by source 1's, the network runs on
(teacher-forced on the double counterfactual's tokens) to ``i2``, and there its own,
already intervened, state has its aligned block(s) replaced by source 2's. A pair is
right when every task-mask token after ``i1`` is predicted as the program says.

If the aligned subspace really holds the variable, the second swap must work on a state
the network reached *because of* the first one; a subspace that only holds the variable in
states of natural trials fails here. As a built-in control, the first swap alone is also
scored against the double counterfactual: on the pairs where the second swap changes the
outcome (``changed_second``) it can only be right by accident.

How positions are chosen (``make_double_pairs``)
------------------------------------------------
Trials and positions are drawn in rounds from one seeded generator. Each round draws
candidate targets, two independent sources, ``i1`` in the target and ``j1``, ``j2`` in the
sources (all uniformly among demo and response tokens, as ``intervention_positions``
does), then the first counterfactual. ``i2`` must be a position the first counterfactual
still reaches: strictly after ``i1``, strictly before its ``E``, and on a demo or response
token (not ``T``), so ``i2`` is the same kind of position as ``i1``. It is drawn uniformly
among those positions. A candidate whose first counterfactual has no such position (e.g.
``i1`` is the last response, or a swapped count of 0 ends the trial at once) is dropped;
rounds continue until ``n`` candidates are kept, in the order drawn. The same seed, ``n``,
counts, task, program and number of blocks give the same pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..game.counterfactuals import PairRows, pairs_from_trials, value_variable, variable_blocks
from ..game.programs import Program, State, counterfactual, intervention_positions, make_program, state_at
from ..game.tasks import Task, Trials, resolve_counts, used_length
from ..networks.hooked import HookedModel
from ..networks.models import RecurrentModel, SequenceModel, TransformerModel
from .alignment import AlignmentFunction
from .iia import frozen, site_states

SUPPORTED = ("GRU and LSTM networks (sites 'state' and 'embed'), Transformers (sites 'embed' and 'resid.K'), "
             "and models wrapped with symlib.wrap_model")


# ---- the program side ------------------------------------------------------------------------------------


@dataclass
class DoublePairs(PairRows):
    """Double-intervention pairs: a target, two sources, and the program's double counterfactual.

    tokens: (N, L) the double counterfactual; up to ``pos1`` it is the target, up to ``pos2``
        the single counterfactual (``single_tokens``).
    task_mask: (N, L) bool, the predictable tokens after ``pos1``.
    pos1, pos2: (N,) the two intervention positions, ``pos1 < pos2``.
    target_tokens: (N, Lt) the target trials.
    src1_tokens, src1_pos, src2_tokens, src2_pos: the source trials (N, Ls) and positions (N,).
    swap1, swap2: (N, n_blocks) bool, which blocks each swap writes.
    single_tokens, single_task_mask: (N, L1) the single counterfactual (the first swap only).
    target_count, source1_count, source2_count: (N,) the trials' demo counts.
    target_value: (N,) ``value_variable`` in the target at ``pos1``; source1_value at ``src1_pos``;
    mid_value: at ``pos2`` of the single counterfactual, just before the second write;
    source2_value: at ``src2_pos``. The ``*_phase`` fields: the phase (0 demo, 1 response) at the same places.
    changed: (N,) bool, the double counterfactual differs from the target's own continuation.
    changed_first: (N,) bool, the single counterfactual differs from the target's own continuation.
    changed_second: (N,) bool, the double counterfactual differs from the single one: the
        second swap changes what the program does.
    value_variable: the program variable the ``*_value`` fields hold.
    """

    tokens: torch.Tensor
    task_mask: torch.Tensor
    pos1: torch.Tensor
    pos2: torch.Tensor
    target_tokens: torch.Tensor
    src1_tokens: torch.Tensor
    src1_pos: torch.Tensor
    src2_tokens: torch.Tensor
    src2_pos: torch.Tensor
    swap1: torch.Tensor
    swap2: torch.Tensor
    single_tokens: torch.Tensor
    single_task_mask: torch.Tensor
    target_count: torch.Tensor
    source1_count: torch.Tensor
    source2_count: torch.Tensor
    target_value: torch.Tensor
    source1_value: torch.Tensor
    mid_value: torch.Tensor
    source2_value: torch.Tensor
    target_phase: torch.Tensor
    source1_phase: torch.Tensor
    mid_phase: torch.Tensor
    source2_phase: torch.Tensor
    changed: torch.Tensor
    changed_first: torch.Tensor
    changed_second: torch.Tensor
    value_variable: str = "count"

    def __getitem__(self, idx) -> "DoublePairs":
        """The pairs ``idx`` (a slice, index tensor or bool mask); padding columns are kept."""
        return self.rows(idx)


def _pad_to(x: torch.Tensor, L: int) -> torch.Tensor:
    return F.pad(x, (0, L - x.shape[1]))


def _differs(tokens, mask, ref_tokens, ref_mask, pos) -> torch.Tensor:
    """Whether a counterfactual differs from a reference after ``pos``, on the task mask: (N,) bool.

    Different when a task-mask position differs, or a token on either task mask differs
    (``pairs_from_trials``'s rule for ``changed``; demo-word identities never count).
    """
    L = max(tokens.shape[1], ref_tokens.shape[1])
    ct, rt, cm, rm = (_pad_to(x, L) for x in (tokens, ref_tokens, mask, ref_mask))
    after = torch.arange(L)[None, :] > pos[:, None]
    cm, rm = cm & after, rm & after
    return ((cm != rm) | ((ct != rt) & (cm | rm))).any(1)


def _swap_values(prog: Program, blocks: list[list[str]], source: State, swap: torch.Tensor):
    """The values to write and on which rows, as ``counterfactual`` takes them: (values, rows)."""
    values, rows = {}, {}
    for b, names in enumerate(blocks):
        for var in names:
            values[var] = prog.read(source, var)
            rows[var] = swap[:, b]
    return values, rows


def _written_state(prog: Program, state: State, values: dict, rows: dict) -> State:
    """The program's state right after an intervention writes ``values`` (as ``counterfactual`` does)."""
    for var, v in values.items():
        state = prog.write(state, var, v, rows.get(var))
    return prog.after_intervention(state)


def intervened_trace(prog: Program, tokens: torch.Tensor, counts: torch.Tensor, pos: torch.Tensor,
                     written: State) -> dict[str, torch.Tensor]:
    """The program's state after each position of a counterfactual sequence: (batch, length) per field.

    tokens: (batch, length) a counterfactual whose intervention at ``pos`` (batch,) left the
    program in state ``written``. Up to ``pos`` it is the program's own trace; at ``pos`` the
    written state; after it, the program stepping on from there over the tokens. (``trace``
    on the same tokens would be wrong after ``pos``: it would not know about the write.)
    """
    s = prog.init(counts)
    out = {k: [] for k in s}
    for i in range(tokens.shape[1]):
        if i > 0:
            s = prog.step(s, tokens[:, i])
        at = pos == i
        s = {k: torch.where(at, written[k], v) for k, v in s.items()}
        for k, v in s.items():
            out[k].append(v)
    return {k: torch.stack(v, 1) for k, v in out.items()}


def second_positions(task: Task, tokens: torch.Tensor, pos1: torch.Tensor) -> torch.Tensor:
    """Where a second intervention may go in counterfactuals ``tokens`` (N, L): (N, L) bool.

    After ``pos1``, before the first ``E`` after it, and on a demo or response token.
    """
    L = tokens.shape[1]
    t = torch.arange(L)[None, :]
    is_end = (tokens == task.E) & (t > pos1[:, None])
    end = torch.where(is_end, t, L).min(1).values
    word = torch.isin(tokens, torch.tensor(task.demo_ids + (task.R,)))
    return word & (t > pos1[:, None]) & (t < end[:, None])


def double_pairs_from_trials(prog: Program, variable: str, tgt: Trials, pos1: torch.Tensor,
                             src1: Trials, spos1: torch.Tensor, pos2: torch.Tensor, src2: Trials, spos2: torch.Tensor,
                             swap1: torch.Tensor | None = None, swap2: torch.Tensor | None = None,
                             generator: torch.Generator | None = None) -> DoublePairs:
    """Double counterfactuals from given trials and positions: (batch,) each.

    The first swap is ``pairs_from_trials`` (target at ``pos1``, source 1 at ``spos1``). The
    second overwrites, at ``pos2`` of that counterfactual, the program's state *in the
    counterfactual* (``intervened_trace``) with source 2's values at ``spos2`` and rolls out
    with ``counterfactual``. ``pos2`` must be one of ``second_positions`` (a ValueError says
    which rows are not). swap1, swap2: (batch, n_blocks) bool, which blocks each swap writes
    (default: all).
    """
    blocks = variable_blocks(prog, variable)
    n, task = len(tgt), prog.task
    swap1 = torch.ones(n, len(blocks), dtype=torch.bool) if swap1 is None else swap1
    swap2 = torch.ones(n, len(blocks), dtype=torch.bool) if swap2 is None else swap2
    single = pairs_from_trials(prog, variable, tgt, pos1, src1, spos1, swap1, generator)
    ok = second_positions(task, single.tokens, pos1)
    good = ok.gather(1, pos2.clamp(0, ok.shape[1] - 1)[:, None])[:, 0] & (pos2 < ok.shape[1])
    if not bool(good.all()):
        bad = (~good).nonzero()[:, 0].tolist()
        b = bad[0]
        raise ValueError(
            f"pos2 must be after pos1 and on a demo or response token before the first counterfactual's E; "
            f"rows {bad[:10]} are not (row {b}: pos1={int(pos1[b])}, pos2={int(pos2[b])}, first counterfactual "
            f"'{task.decode(single.tokens[b])}', valid pos2: {ok[b].nonzero()[:, 0].tolist()})")
    # the program's state along the single counterfactual, the first write included
    ttrace, s1trace, s2trace = prog.trace(tgt), prog.trace(src1), prog.trace(src2)
    values1, rows1 = _swap_values(prog, blocks, state_at(s1trace, spos1), swap1)
    written = _written_state(prog, state_at(ttrace, pos1), values1, rows1)
    ctrace = intervened_trace(prog, single.tokens, tgt.counts, pos1, written)
    # the second write, on the single counterfactual as the new target
    values2, rows2 = _swap_values(prog, blocks, state_at(s2trace, spos2), swap2)
    lengths = (single.tokens != task.P).sum(1)
    mid = Trials(single.tokens, single.task_mask, tgt.counts, (single.tokens == task.T).long().argmax(1), lengths)
    tokens, mask2 = counterfactual(prog, mid, pos2, values2, rows2, generator, trace=ctrace)
    L = tokens.shape[1]
    t = torch.arange(L)[None, :]
    mask = (_pad_to(single.task_mask, max(L, single.tokens.shape[1]))[:, :L] & (t <= pos2[:, None])) | mask2
    num = value_variable(prog, variable)
    mid_state = state_at(ctrace, pos2)
    s2 = state_at(s2trace, spos2)
    return DoublePairs(
        tokens=tokens, task_mask=mask, pos1=pos1, pos2=pos2, target_tokens=tgt.tokens,
        src1_tokens=src1.tokens, src1_pos=spos1, src2_tokens=src2.tokens, src2_pos=spos2, swap1=swap1, swap2=swap2,
        single_tokens=single.tokens, single_task_mask=single.task_mask,
        target_count=tgt.counts, source1_count=src1.counts, source2_count=src2.counts,
        target_value=single.target_value, source1_value=single.source_value,
        mid_value=prog.read(mid_state, num), source2_value=prog.read(s2, num),
        target_phase=single.target_phase, source1_phase=single.source_phase,
        mid_phase=prog.read(mid_state, "phase"), source2_phase=prog.read(s2, "phase"),
        changed=_differs(tokens, mask, tgt.tokens, tgt.task_mask, pos1),
        changed_first=single.changed,
        changed_second=_differs(tokens, mask, single.tokens, single.task_mask, pos2),
        value_variable=num)


def _cat_trials(parts: list[Trials]) -> Trials:
    """Concatenate trials of different lengths (padding with ``P`` = 0)."""
    L = max(p.tokens.shape[1] for p in parts)
    return Trials(torch.cat([_pad_to(p.tokens, L) for p in parts]), torch.cat([_pad_to(p.task_mask, L) for p in parts]),
                  *(torch.cat([getattr(p, k) for p in parts]) for k in ("counts", "trigger_pos", "lengths")))


def make_double_pairs(task: Task, program: str | Program = "up_down", variable: str = "count", n: int = 1000,
                      counts="train", seed: int = 0, max_rounds: int = 20) -> DoublePairs:
    """Sample ``n`` double-intervention pairs (seeded); see the module docstring for how
    positions are chosen. For ``count_phase`` each swap writes count, phase, or both (a
    third each, drawn independently for the two swaps)."""
    counts = resolve_counts(counts)
    prog = make_program(program, task) if isinstance(program, str) else program
    blocks = variable_blocks(prog, variable)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    g = torch.Generator().manual_seed(seed)

    def choice(m):
        if len(blocks) == 1:
            return torch.ones(m, 1, dtype=torch.bool)
        c = torch.randint(3, (m,), generator=g)  # 0: first block, 1: second, 2: both
        return torch.stack([c != 1, c != 0], 1)

    kept: dict[str, list] = {k: [] for k in ("tgt", "src1", "src2", "pos1", "spos1", "spos2", "pos2", "swap1", "swap2")}
    have = 0
    for _ in range(max_rounds):
        m = n - have + (n - have) // 4 + 16  # a few spare candidates for the ones dropped
        tgt, src1, src2 = (task.sample(m, counts, g, unk_p=0.0) for _ in range(3))
        pos1, spos1, spos2 = intervention_positions(tgt, g), intervention_positions(src1, g), intervention_positions(src2, g)
        swap1, swap2 = choice(m), choice(m)
        single = pairs_from_trials(prog, variable, tgt, pos1, src1, spos1, swap1, g)
        ok = second_positions(task, single.tokens, pos1)
        keep = ok.any(1).nonzero()[:, 0][: n - have]
        if len(keep):
            pos2 = torch.multinomial(ok[keep].float(), 1, generator=g)[:, 0]
            for k, v in (("tgt", tgt[keep]), ("src1", src1[keep]), ("src2", src2[keep]), ("pos1", pos1[keep]),
                         ("spos1", spos1[keep]), ("spos2", spos2[keep]), ("pos2", pos2),
                         ("swap1", swap1[keep]), ("swap2", swap2[keep])):
                kept[k].append(v)
        have += len(keep)
        if have >= n:
            break
    else:
        raise RuntimeError(f"only {have} of {n} candidates had a position for a second swap after {max_rounds} rounds")
    cat = {k: (_cat_trials(v) if k in ("tgt", "src1", "src2") else torch.cat(v)) for k, v in kept.items()}
    # from here on g only draws the identities of rolled-out demo tokens
    return double_pairs_from_trials(prog, variable, cat["tgt"], cat["pos1"], cat["src1"], cat["spos1"],
                                    cat["pos2"], cat["src2"], cat["spos2"], cat["swap1"], cat["swap2"], g)


# ---- the network side ------------------------------------------------------------------------------------


def _hook_site(model: SequenceModel, site: str):
    """The module whose output is the state at ``site`` and its time axis, for sites whose value at a
    position is computed without reading that module's outputs at earlier positions; else None."""
    if isinstance(model, TransformerModel):
        return (model.embed, 1) if site == "embed" else (model.blocks[int(site.split(".")[1])], 1)
    if isinstance(model, RecurrentModel) and site == "embed":
        return model.embed, 1
    if isinstance(model, HookedModel) and not model.recurrent:
        return model.sub, model.time_dim
    return None


def _is_recurrent_state(model: SequenceModel, site: str) -> bool:
    return (isinstance(model, RecurrentModel) and site == "state") or (isinstance(model, HookedModel) and model.recurrent)


def _state_after_first(model, tokens, site, pos1, h1, pos2) -> torch.Tensor:
    """A recurrent network's state at ``pos2`` when its state at ``pos1`` was set to ``h1``,
    fed ``tokens`` in between: (B, d).

    A symlib GRU/LSTM continues its recurrence from ``h1`` (one packed pass, its own state
    packing); a wrapped model is stepped with its intervention patch, reading the states.
    """
    if isinstance(model, HookedModel):
        captured = []
        with model.patched(capture=captured, replace=(pos1, h1)):
            model.module(tokens[:, : int(pos2.max()) + 1])
        S = captured[0]
        return S[torch.arange(S.shape[0], device=S.device), pos2]
    # continue the recurrence from h1 over tokens pos1+1 .. pos2, each row its own number of steps
    n = pos2 - pos1
    k = torch.arange(int(n.max()), device=tokens.device)[None, :]
    cont = tokens.gather(1, (pos1[:, None] + 1 + k).clamp(max=tokens.shape[1] - 1))
    packed = torch.nn.utils.rnn.pack_padded_sequence(model.embed(cont), n.cpu(), batch_first=True, enforce_sorted=False)
    _, hx = model.rnn(packed, model.unpack_state(h1))
    return model.pack_state(hx)


def _hooked_logits(model, module, time_dim, tokens, swaps) -> torch.Tensor:
    """Logits with the output of ``module`` replaced at one or more positions, in one pass: (B, L, V).

    swaps: [(pos (B,), new value as a function of the current value (B, d) -> (B, d))],
    applied in order. A later position reads the value the earlier replacements left; since
    the module's output at any position is computed before the hook replaces anything, and
    the replaced values are read only by later layers, that is the intervened network's
    own state there.
    """
    def hook(mod, args, out):
        y = (out[0] if isinstance(out, tuple) else out).movedim(time_dim, 1).clone()
        rows = torch.arange(y.shape[0], device=y.device)
        for pos, fn in swaps:
            y[rows, pos] = fn(y[rows, pos]).to(y.dtype)
        y = y.movedim(1, time_dim)
        return (y,) + tuple(out[1:]) if isinstance(out, tuple) else y

    handle = module.register_forward_hook(hook)
    try:
        return model(tokens)
    finally:
        handle.remove()


def _check_supported(model: SequenceModel, site: str | None) -> str:
    """Return the site (the model's default when None); raise NotImplementedError where double
    interventions are not implemented."""
    site = model.check_site(site)
    if _hook_site(model, site) is None and not _is_recurrent_state(model, site):
        raise NotImplementedError(f"double interventions are not supported for a {model.kind} at site {site!r}; "
                                  f"supported: {SUPPORTED}")
    return site


def double_intervened_logits(model: SequenceModel, align: AlignmentFunction, tokens: torch.Tensor,
                             pos1: torch.Tensor, pos2: torch.Tensor, h1: torch.Tensor, h_s1: torch.Tensor,
                             h_s2: torch.Tensor, swap1: torch.Tensor, swap2: torch.Tensor, site: str | None = None):
    """The logits of ``model`` on ``tokens`` with a swap at ``pos1`` and another at ``pos2``: (double, single).

    tokens: (B, L) the double counterfactuals; pos1 < pos2: (B,); h1: (B, d) the state at
    ``pos1`` (the target's own); h_s1, h_s2: (B, d) the sources' states; swap1, swap2:
    (B, n_blocks) which blocks each swap moves. Returns two (B, L, V) logits, valid from
    ``pos1`` on (zeros before it may appear): the double intervention, and the first swap
    alone (``run_with_state``). See ``double_intervention_iia`` for how each network kind
    is run. Gradients are not needed here: call it under ``torch.no_grad`` (as
    ``double_intervention_iia`` does).
    """
    site = _check_supported(model, site)
    h1_new = align.interchange(h1, h_s1, swap1)
    single = model.run_with_state(tokens, site, pos1, h1_new, prefix=False)
    hooked = _hook_site(model, site)
    if hooked is not None:
        module, time_dim = hooked
        swaps = [(pos1, lambda x: align.interchange(x, h_s1, swap1)), (pos2, lambda x: align.interchange(x, h_s2, swap2))]
        return _hooked_logits(model, module, time_dim, tokens, swaps), single
    m2 = _state_after_first(model, tokens, site, pos1, h1_new, pos2)
    second = model.run_with_state(tokens, site, pos2, align.interchange(m2, h_s2, swap2), prefix=False)
    # a recurrent network's outputs from pos2 on depend on the past only through its state at pos2
    t = torch.arange(tokens.shape[1], device=tokens.device)[None, :, None]
    return torch.where(t >= pos2[:, None, None], second, single), single


def _rate(x: torch.Tensor) -> float | None:
    return float(x.float().mean()) if x.numel() else None


def _all_right(logits: torch.Tensor, tokens: torch.Tensor, task_mask: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Per row: is every task-mask token after ``start`` predicted right (teacher-forced)? (B,) bool."""
    pred = logits[:, :-1].argmax(-1)
    t = torch.arange(tokens.shape[1] - 1, device=tokens.device)[None, :]
    scored = task_mask[:, 1:] & (t >= start[:, None])
    return ((pred == tokens[:, 1:]) | ~scored).all(1)


@torch.no_grad()
def double_intervention_iia(model: SequenceModel, align: AlignmentFunction, pairs: DoublePairs,
                            site: str | None = None, batch: int = 500) -> dict:
    """IIA of ``align`` on ``model`` when the aligned block(s) are swapped at two positions of a trial.

    The target's state at ``pos1`` gets source 1's aligned block(s) (its state at
    ``src1_pos``); the network runs on, teacher-forced on the double counterfactual; its own
    state at ``pos2``, already changed by the first swap, gets source 2's. Returns:

    - ``iia``: the fraction of pairs whose every task-mask token after ``pos1`` is right;
      ``iia_changed``, ``iia_changed_second``: the same on the ``changed`` and
      ``changed_second`` pairs (None if there are none);
    - ``iia_after_second`` (and ``_changed_second``): counting only the tokens after ``pos2``;
    - ``iia_single_first`` (``_changed``, ``_changed_second``): a reference, the first swap
      alone scored against the double counterfactual. On ``changed_second`` pairs it can only
      be right by accident, so it should be low there;
    - ``n``, ``n_changed``, ``n_changed_second``; ``correct``, ``correct_after_second``,
      ``correct_single_first``: (N,) bool per pair.

    Recurrent networks (GRU, LSTM, a wrapped ``nn.RNN``...) at their state: the state at
    ``pos2`` is the recurrence continued from the swapped state at ``pos1``. Transformers
    (``embed``, ``resid.K``) and an RNN's ``embed``: one pass with a forward hook that swaps at
    ``pos1`` and then at ``pos2``. The residual after layer K at ``pos2`` is computed by layers
    0..K, which never read layer K's output at ``pos1``, so the value the hook reads at ``pos2``
    is already the intervened network's; the first swap reaches later positions through the
    layers after K, which the same pass runs.
    """
    site = _check_supported(model, site)
    if align.n_blocks != pairs.swap1.shape[1]:
        raise ValueError(f"the alignment has {align.n_blocks} block(s) but the pairs swap {pairs.swap1.shape[1]}")
    dev = model.device
    H1 = site_states(model, pairs.tokens, pairs.pos1, site)
    S1 = site_states(model, pairs.src1_tokens, pairs.src1_pos, site)
    S2 = site_states(model, pairs.src2_tokens, pairs.src2_pos, site)
    was = align.training
    align.eval()
    ok, ok2, ok1 = [], [], []
    try:
        with frozen(model):
            for i in range(0, len(pairs), batch):
                sl = slice(i, i + batch)
                tokens, mask = pairs.tokens[sl], pairs.task_mask[sl]
                L = used_length(tokens)
                tokens, mask = tokens[:, :L].to(dev), mask[:, :L].to(dev)
                p1, p2 = pairs.pos1[sl].to(dev), pairs.pos2[sl].to(dev)
                sw1, sw2 = pairs.swap1[sl].to(dev), pairs.swap2[sl].to(dev)
                h1, s1, s2 = H1[sl].to(dev), S1[sl].to(dev), S2[sl].to(dev)
                double, single = double_intervened_logits(model, align, tokens, p1, p2, h1, s1, s2, sw1, sw2, site)
                ok.append(_all_right(double, tokens, mask, p1).cpu())
                ok2.append(_all_right(double, tokens, mask, p2).cpu())
                ok1.append(_all_right(single, tokens, mask, p1).cpu())
    finally:
        align.train(was)
    correct, after2, first = torch.cat(ok), torch.cat(ok2), torch.cat(ok1)
    ch, ch2 = pairs.changed.bool(), pairs.changed_second.bool()
    return {
        "iia": _rate(correct), "iia_changed": _rate(correct[ch]), "iia_changed_second": _rate(correct[ch2]),
        "iia_after_second": _rate(after2), "iia_after_second_changed_second": _rate(after2[ch2]),
        "iia_single_first": _rate(first), "iia_single_first_changed": _rate(first[ch]),
        "iia_single_first_changed_second": _rate(first[ch2]),
        "n": len(pairs), "n_changed": int(ch.sum()), "n_changed_second": int(ch2.sum()),
        "correct": correct, "correct_after_second": after2, "correct_single_first": first,
    }

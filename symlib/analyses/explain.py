"""One interchange intervention, explained: the program's side and a network's side of a hand-picked pair.

What the explorer (``symlib.book.widgets``, chapter 08) shows is computed here, with no widgets:
``program_view`` (the program's counterfactual for one target and source trial and the positions
picked, and what it now expects, in words), ``network_view`` (the network's own answer without and
with the swap, where it differs from the program's, and where the swap changed it),
``explain_pair`` (both, as words, for one network and alignment) and the learned number line
scored out of sample (``readout_fit``, as ``analysis.number_line`` scores it). Trials are drawn
from generators seeded by the view alone, so a test can check a view against the program.
"""
from __future__ import annotations

import copy
import html
import zlib

import numpy as np
import torch

from ..game.counterfactuals import pairs_from_trials, variable_blocks
from ..game.programs import make_program, state_at
from ..game.tasks import Task, Trials
from ..networks.models import SequenceModel, greedy_rollout
from ..intervene.alignment import AlignmentFunction
from ..intervene.das import DASConfig
from ..intervene.iia import frozen, intervened_logits
from ..intervene.store import ResultsStore
from .analysis import block_coords, natural_states, number_line


#: The view the explorer opens on: a trial of N = 6 stopped after its 4th demo token (count 4),
#: with the count 9 read after the 9th demo token of an N = 9 trial swapped in. The swap changes
#: the answer: the program now skips the remaining demos and expects 9 responses instead of 6.
DEFAULT_VIEW = dict(target_count=6, target_pos=3, source_count=9, source_pos=8, seed=0)


_TRIALS: dict = {}


def trial_for(task: Task, count: int, seed: int = 0, role: str = "target") -> Trials:
    """One trial of demo count ``count`` (no void tokens), drawn from a generator seeded by
    (``role``, ``count``, ``seed``) alone: the target's and the source's trials never depend on
    each other's sliders. Cached."""
    key = (task.name, int(count), int(seed), role)
    t = _TRIALS.get(key)
    if t is None:
        g = torch.Generator().manual_seed(zlib.crc32(f"{role}:{int(count)}:{int(seed)}".encode()))
        t = task.trials_for_counts(torch.tensor([int(count)]), g, unk_p=0.0)
        if len(_TRIALS) > 512:
            _TRIALS.clear()
        _TRIALS[key] = t
    return t


def valid_positions(trial_tokens: torch.Tensor, task: Task) -> list[int]:
    """Positions of demo and response tokens in one trial (where interventions may happen)."""
    toks = trial_tokens.tolist()
    return [i for i, t in enumerate(toks) if t not in (task.P, task.B, task.T, task.E)]


def _where(task: Task, trial: Trials, pos: int) -> str:
    """'demo 4 of 6 (D1)' or 'response 2 of 6 (R)': token ``pos`` of a one-trial batch, in words."""
    n, tpos = int(trial.counts[0]), int(trial.trigger_pos[0])
    word = task.vocab[int(trial.tokens[0, pos])]
    if pos < tpos:
        return f"demo {pos} of {n} ({word})"
    r = int(task.response_count(trial.counts)[0])
    return f"response {pos - tpos} of {r} ({word})"


def plural(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def _continuation(task: Task, tokens: list[int], mask: list[bool], pos: int) -> dict:
    """What follows ``pos`` in a sequence: demo tokens added, whether T comes, responses expected."""
    after = [(t, m) for t, m in zip(tokens[pos + 1:], mask[pos + 1:]) if t != task.P]
    demo = set(task.demo_ids)
    n_demo, n_t, n_resp = 0, 0, 0
    for t, m in after:
        if m and t == task.R:
            n_resp += 1
        elif t == task.T:
            n_t += 1
        elif t in demo and not m:
            n_demo += 1
    return {"demos": n_demo, "trigger": n_t > 0, "responses": n_resp}


def program_view(task: Task, program: str, variable: str, target_count: int, target_pos: int, source_count: int,
                 source_pos: int, seed: int = 0) -> dict:
    """The program's side of one hand-picked pair, without any network.

    Positions index the demo and response tokens of each trial (0 = the first demo token) and
    are clamped to the trial. Returns the trials, the pair (``CounterfactualPairs`` of one),
    the absolute positions, the swapped values, the program's counterfactual as words and an
    explanation in words (``text``): what the program now expects after the swap.
    """
    prog = make_program(program, task)
    blocks = variable_blocks(prog, variable)
    tgt = trial_for(task, target_count, seed, "target")
    src = trial_for(task, source_count, seed, "source")
    tp, sp = valid_positions(tgt.tokens[0], task), valid_positions(src.tokens[0], task)
    ti, si = min(max(int(target_pos), 0), len(tp) - 1), min(max(int(source_pos), 0), len(sp) - 1)
    pos, spos = torch.tensor([tp[ti]]), torch.tensor([sp[si]])
    # the demo tokens a counterfactual adds are drawn from a generator of this view alone
    g = torch.Generator().manual_seed(zlib.crc32(f"cf:{program}:{variable}:{target_count}:{ti}:{source_count}:{si}:{seed}".encode()))
    pair = pairs_from_trials(prog, variable, tgt, pos, src, spos, None, g)
    p = int(pos[0])
    cf_tokens = pair.tokens[0][: int((pair.tokens[0] != task.P).sum())].tolist()
    cf_mask = pair.task_mask[0][: len(cf_tokens)].tolist()
    tgt_tokens = tgt.tokens[0][: int(tgt.lengths[0])].tolist()
    tgt_mask = tgt.task_mask[0][: len(tgt_tokens)].tolist()
    now, before = _continuation(task, cf_tokens, cf_mask, p), _continuation(task, tgt_tokens, tgt_mask, p)
    # the values swapped, in words
    names = [v for b in blocks for v in b]
    t_state, s_state = state_at(prog.trace(tgt), pos), state_at(prog.trace(src), spos)
    values = {v: (int(prog.read(t_state, v)[0]), int(prog.read(s_state, v)[0])) for v in names}
    r = {
        "task": task, "program": program, "variable": variable, "target_trial": tgt, "source_trial": src, "pair": pair,
        "target_pos": p, "source_pos": int(spos[0]), "target_index": ti, "source_index": si,
        "n_target_positions": len(tp), "n_source_positions": len(sp),
        "target_words": [task.vocab[t] for t in tgt_tokens], "source_words": [task.vocab[t] for t in src.tokens[0][: int(src.lengths[0])].tolist()],
        "program_words": [task.vocab[t] for t in cf_tokens], "program_mask": cf_mask,
        "target_value": int(pair.target_value[0]), "source_value": int(pair.source_value[0]),
        "target_phase": int(pair.target_phase[0]), "source_phase": int(pair.source_phase[0]),
        "values": values, "changed": bool(pair.changed[0]),
        "expects": now, "expected_before": before,
        "target_where": _where(task, tgt, p), "source_where": _where(task, src, int(spos[0])),
    }
    r["text"] = _explanation(r)
    return r


def _phase_word(v: int) -> str:
    return "response" if v else "demo"


def _explanation(r: dict) -> str:
    """The program's side of a view in plain words (HTML-safe text)."""
    n = int(r["target_trial"].counts[0])
    swapped = []
    for var, (tv, sv) in r["values"].items():
        if var == "phase":
            swapped.append(f"phase <b>{_phase_word(sv)}</b> (the target's: {_phase_word(tv)})")
        else:
            swapped.append(f"{var} <b>{sv}</b> (the target's: {tv})")
    what = " and ".join(swapped) if swapped else "nothing (the null variable)"
    head = (f"Swap <b>{html.escape(r['variable'])}</b>: the source's {what}, read after its {r['source_where']}, "
            f"is written into the target after its {r['target_where']}, where <code>|</code> stands.")
    now, before = r["expects"], r["expected_before"]
    in_demo = r["target_pos"] < int(r["target_trial"].trigger_pos[0])
    if in_demo:
        if now["demos"]:
            demos = (f"The target's N is {n}, and the program shows demo tokens until its count reaches N, so after the "
                     f"<code>|</code> <b>the program adds {plural(now['demos'], 'demo token')}</b> (drawn at random: they are "
                     f"the program's, given to the network as input, not predicted), then T.")
        elif now["trigger"]:
            demos = (f"The target's N is {n}; with the swapped count the program has no demo tokens left to show, "
                     f"so <b>T comes right after the <code>|</code></b>.")
        else:
            demos = f"The target's N is {n}."
        expects = (f" <b>The program now expects {plural(now['responses'], 'response token')}</b> then E "
                   f"(without the swap: {before['responses']}).")
        text = f"{head} {demos}{expects}"
    else:
        text = (f"{head} <b>The program now expects {now['responses']} more response token"
                f"{'' if now['responses'] == 1 else 's'}</b> then E (without the swap: {before['responses']} more).")
    if not r["changed"]:
        text += " This swap does not change the program's answer: pick a source value that differs from the target's."
    return text


def diff_positions(a: list[str], b: list[str], start: int = 0) -> list[int]:
    """Positions >= ``start`` where two token rows differ (a missing token differs from any token)."""
    n = max(len(a), len(b))
    return [i for i in range(start, n) if (a[i] if i < len(a) else None) != (b[i] if i < len(b) else None)]


class ExplorerNetwork:
    """One network and its caches: states per trial, the run without a swap, number-line fits."""

    def __init__(self, name: str, model: SequenceModel, task: Task):
        self.name, self.model, self.task = name, model, task
        self._states: dict = {}
        self._plain: dict = {}
        self._keys: dict = {}
        self._lines: dict = {}

    def states(self, trial: Trials, key, site) -> torch.Tensor:
        """The state at every position of a one-trial batch: (L, d) on the model's device."""
        k = (key, site)
        if k not in self._states:
            with frozen(self.model), torch.no_grad():
                self._states[k] = self.model.states(trial.tokens.to(self.model.device), site)[0].float()
        return self._states[k]

    def plain_rollout(self, trial: Trials, key) -> list[int]:
        """The network's own greedy answer on the trial, nothing swapped (cut at its E)."""
        if key not in self._plain:
            dev = self.model.device
            with frozen(self.model), torch.no_grad():
                out = greedy_rollout(self.model, trial.tokens.to(dev), trial.task_mask.to(dev))
            toks = out[0].cpu().tolist()
            self._plain[key] = toks[: sum(1 for t in toks if t != self.task.P)]
        return self._plain[key]

    def store_key(self, store: ResultsStore, cfg: DASConfig) -> str:
        k = repr(cfg)
        if k not in self._keys:
            self._keys[k] = store.key(self.model, self.task, cfg)
        return self._keys[k]


def readout_fit(net: ExplorerNetwork, program: str, align: AlignmentFunction, site, n_trials: int, seed: int) -> dict:
    """The learned number line, scored as the book scores it (``analysis.number_line``): a read-out of the
    count from the alignment's first block, fitted on half the natural trials; ``r`` and where each count
    sits (``means``) are measured on the other half, trials the fit never saw."""
    st = natural_states(net.model, net.task, program, n_trials=n_trials, seed=seed, site=site)
    line = number_line(align, st, block=0, n_random=0, test_fraction=0.5, seed=seed)
    means = {}
    for v in np.unique(line["value_test"]):
        for ph in (0, 1):
            sel = (line["value_test"] == v) & (line["phase_test"] == ph)
            if sel.any():
                means[(int(v), ph)] = float(line["coord_test"][sel].mean())
    return {"w": line["w"], "means": means, "r": line["r_test"], "max_value": int(np.max(st["value"]))}


def readout(fit: dict, align: AlignmentFunction, h: torch.Tensor) -> float:
    Z = block_coords(align, h.detach().float().cpu().numpy()[None, :], 0)
    return float((np.c_[Z, np.ones(1)] @ fit["w"])[0])


def frozen_alignment(align: AlignmentFunction) -> AlignmentFunction:
    """A copy of ``align`` in eval mode with its parametrized weights (the orthogonal ones) computed once and
    stored as plain tensors: the same map, but a slider move no longer recomputes a rotation at each use."""
    from torch.nn.utils import parametrize
    a = copy.deepcopy(align).eval()
    for m in list(a.modules()):
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations.keys()):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    for p in a.parameters():
        p.requires_grad_(False)
    return a


def _fast_recurrent(model, site) -> bool:
    """Whether ``model`` steps from a given state by itself (a symlib one-layer RNN at its ``state`` site)."""
    from ..networks.models import RecurrentModel
    return isinstance(model, RecurrentModel) and site == "state" and model.config.n_layers == 1


@torch.no_grad()
def intervened_rollout(model: SequenceModel, align: AlignmentFunction, tokens: torch.Tensor, task_mask: torch.Tensor,
                       pos: torch.Tensor, h_t: torch.Tensor, h_s: torch.Tensor, swap: torch.Tensor, site: str,
                       h_new: torch.Tensor | None = None, extra: int = 12) -> torch.Tensor:
    """What the intervened network answers by itself: ``network_rollout``'s answer for pairs whose states are
    known, (B, L + extra) cut at its ``E``. A symlib RNN steps token by token from the swapped state (one
    pass); other networks go through ``greedy_rollout`` (repeated passes with the swap)."""
    if not _fast_recurrent(model, site):
        fn = lambda inp: intervened_logits(model, align, inp, pos, h_t, h_s, swap, site)
        return greedy_rollout(model, tokens, task_mask, extra=extra, logits_fn=fn)
    h_new = align.interchange(h_t, h_s, swap) if h_new is None else h_new
    from ..networks.models import cut_at_end
    L = tokens.shape[1]
    tok = torch.nn.functional.pad(tokens, (0, extra))
    t = torch.arange(L + extra, device=tokens.device)[None, :]
    last = torch.where(tokens != 0, torch.arange(L, device=tokens.device)[None, :], -1).max(1).values
    feed = torch.nn.functional.pad(task_mask, (0, extra)) | (t > last[:, None])
    fed = model.free_run_from(tok, feed, pos, h_new.to(tokens.device, model.embed.weight.dtype))
    start = torch.where(task_mask, torch.arange(L, device=tokens.device)[None, :], L).min(1).values - 1
    return cut_at_end(fed, start)


def network_view(net: ExplorerNetwork, align: AlignmentFunction | None, site: str | None, program: str, variable: str,
                 target_count: int, target_pos: int, source_count: int, source_pos: int, seed: int = 0, line=None) -> dict:
    """``program_view`` plus the network's side: its greedy answer without the swap (``plain_words``) and,
    with an alignment, after it (``network_words``; ``network_own``: which of its tokens are its own output,
    not given), the positions where network and program differ (``diff``), where the swap changed the
    network's own output (``changed_by_swap``), ``agree``, and ``line(h_t, h_s, h_new, view)``'s result."""
    task = net.task
    r = program_view(task, program, variable, target_count, target_pos, source_count, source_pos, seed)
    r["network_name"] = net.name
    p = r["target_pos"]
    tkey, skey = ("target", int(target_count), int(seed)), ("source", int(source_count), int(seed))
    r["plain_words"] = [task.vocab[t] for t in net.plain_rollout(r["target_trial"], tkey)]
    r["network_words"] = r["network_own"] = r["line"] = None
    r["diff"], r["changed_by_swap"], r["agree"] = [], [], None
    if align is None:
        return r
    model = net.model
    site = model.check_site(site)
    h_t = net.states(r["target_trial"], tkey, site)[p][None]
    h_s = net.states(r["source_trial"], skey, site)[r["source_pos"]][None]
    pair, dev = r["pair"], model.device
    pos, swap = pair.pos.to(dev), pair.swap.to(dev)
    was = align.training
    align.eval()
    try:
        with frozen(model), torch.no_grad():
            h_new = align.interchange(h_t, h_s, swap)
            out = intervened_rollout(model, align, pair.tokens.to(dev), pair.task_mask.to(dev), pos, h_t, h_s, swap, site, h_new)
            h_new = h_new[0]
    finally:
        align.train(was)
    toks = out[0].cpu().tolist()
    toks = toks[: sum(1 for t in toks if t != task.P)]
    r["network_words"] = [task.vocab[t] for t in toks]
    n_cf, mask = len(r["program_words"]), r["program_mask"]
    r["network_own"] = [i > p and (i >= n_cf or bool(mask[i])) for i in range(len(toks))]
    r["diff"] = diff_positions(r["program_words"], r["network_words"], p + 1)
    r["changed_by_swap"] = [i for i in diff_positions(r["plain_words"], r["network_words"], p + 1)
                            if i < len(toks) and r["network_own"][i]]
    r["agree"] = not r["diff"]
    if line is not None:
        r["line"] = line(h_t[0], h_s[0], h_new, r)
    return r


def explain_pair(model: SequenceModel, task: Task, align: AlignmentFunction, program: str = "up_down", variable: str = "count",
                 target_count: int = DEFAULT_VIEW["target_count"], target_pos: int = DEFAULT_VIEW["target_pos"],
                 source_count: int = DEFAULT_VIEW["source_count"], source_pos: int = DEFAULT_VIEW["source_pos"],
                 seed: int = 0, site: str | None = None) -> dict:
    """One hand-picked pair: the program's and the network's counterfactuals as words.

    Positions index the demo and response tokens of each trial (0 = the first demo token);
    the defaults are the explorer's opening view, a swap that changes the answer. Returns
    ``target``, ``source``, ``program`` and ``network`` (words, ``|`` after the swap),
    ``target_pos``, ``source_pos``, ``target_value``, ``source_value``, ``changed``, ``agree``,
    ``text`` (the explanation) and ``expects`` (what the program now expects).
    """
    r = network_view(ExplorerNetwork("model", model, task), align, site, program, variable, target_count, target_pos,
                     source_count, source_pos, seed)
    p = r["target_pos"]
    j = lambda w: " ".join(w[: p + 1]) + " | " + " ".join(w[p + 1:])
    return {
        "target": " ".join(r["target_words"]), "source": " ".join(r["source_words"]),
        "target_pos": p, "source_pos": r["source_pos"], "source_value": r["source_value"], "target_value": r["target_value"],
        "program": j(r["program_words"]), "network": j(r["network_words"]), "changed": r["changed"],
        "agree": r["agree"], "text": r["text"], "expects": r["expects"],
    }

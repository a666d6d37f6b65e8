"""Symbolic programs (causal models) of the counting tasks, vectorised over a batch.

Convention (docs/science.md): the variables at position i are the values *after*
consuming token i. An intervention at position i overwrites them right after token i
is consumed; the program then emits its prediction for token i+1 and rolls on.

A program's state is a dict of (batch,) long tensors. ``n`` is the trial's demo count
(what the demo phase is generated up to); it is never swapped.

Right after the variables are overwritten, ``counterfactual`` calls the program's
``after_intervention``: for Mod-4 it reduces the count mod 4 again when the program is
left in the response phase (the original study's Up-Down does so; see each program).
"""
from __future__ import annotations

from typing import Dict

import torch

from ..utils import check_choice
from .tasks import Task, Trials, used_length

State = Dict[str, torch.Tensor]
DEMO, RESPONSE = 0, 1


class Program:
    """Base class: a program reads one token at a time and keeps variables."""

    name: str = ""
    #: Variables an intervention may overwrite.
    variables: tuple[str, ...] = ()
    #: The program's number variable, what ``"count"`` means for it.
    number_variable: str = "count"

    def __init__(self, task: Task):
        self.task = task
        self._demo_ids = torch.tensor(task.demo_ids)

    # -- to be written by each program -------------------------------------------
    def init(self, n: torch.Tensor) -> State:
        """Return the state after consuming ``B`` for trials of demo count ``n``: (batch,)."""
        raise NotImplementedError

    def step(self, s: State, tok: torch.Tensor) -> State:
        """Return the state after consuming ``tok``: (batch,)."""
        raise NotImplementedError

    def _decide(self, s: State) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (phase the decision is made in, word code): 0 demo, 1 trigger, 2 response, 3 end."""
        raise NotImplementedError

    def read(self, s: State, var: str) -> torch.Tensor:
        """Return the value of variable ``var``: (batch,)."""
        return s[var]

    def write(self, s: State, var: str, value: torch.Tensor, rows: torch.Tensor | None = None) -> State:
        """Return a copy of ``s`` with ``var`` set to ``value`` on ``rows`` (bool, (batch,))."""
        self._check_var(var)
        s = dict(s)
        value = torch.as_tensor(value, dtype=torch.long)
        s[var] = value if rows is None else torch.where(rows, value, s[var])
        return s

    def after_intervention(self, s: State) -> State:
        """Return the state once an intervention's writes are done: (batch,) fields.

        The base program changes nothing; Mod-4 programs reduce their count again here.
        """
        return s

    def _reduce_in_response(self, value: torch.Tensor, in_response: torch.Tensor) -> torch.Tensor:
        """Reduce ``value`` mod 4 on the rows ``in_response`` when the task is Mod-4: (batch,).

        Only Mod-4 reduces after an intervention: the original's Round-3 program applies
        its rounding at ``T`` only, so a count written later is taken as it is.
        """
        if self.task.transform != "mod4":
            return value
        return torch.where(in_response, value % 4, value)

    # -- shared machinery ---------------------------------------------------------
    def _check_var(self, var: str) -> None:
        check_choice(f"variable of program {self.name}", var, self.variables)

    def _is_demo_token(self, s: State, tok: torch.Tensor) -> torch.Tensor:
        # In SameObject the response word is also 'D': a demo token only in the demo phase.
        return torch.isin(tok, self._demo_ids.to(tok.device)) & (s["phase"] == DEMO)

    def _is_resp_token(self, s: State, tok: torch.Tensor) -> torch.Tensor:
        return (tok == self.task.R) & (s["phase"] == RESPONSE)

    def next_token(self, s: State, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (token, task_mask): the program's next token and whether it is a task-mask token.

        Demo tokens are drawn at random among the task's demo words; responses and ``E``
        decided in the response phase are the task-mask (predictable) tokens.
        """
        t = self.task
        code = self._decide(s)
        batch = code.shape[0]
        demo = self._demo_ids[torch.randint(len(self._demo_ids), (batch,), generator=generator)].to(code.device)
        words = torch.stack([demo, torch.full_like(demo, t.T), torch.full_like(demo, t.R), torch.full_like(demo, t.E)], 1)
        tok = words.gather(1, code[:, None])[:, 0]
        task_mask = code >= 2
        return tok, task_mask

    def trace(self, trials: Trials) -> dict[str, torch.Tensor]:
        """Run over every trial; return each state field after each position: (batch, length)."""
        toks = trials.tokens
        s = self.init(trials.counts)
        out = {k: [v] for k, v in s.items()}
        for i in range(1, toks.shape[1]):
            s = self.step(s, toks[:, i])
            for k, v in s.items():
                out[k].append(v)
        return {k: torch.stack(v, 1) for k, v in out.items()}

    def rollout(self, s: State, max_steps: int, generator: torch.Generator | None = None):
        """Emit tokens from state ``s`` until ``E``: returns (tokens, task_mask), (batch, steps), padded with P."""
        batch = next(iter(s.values())).shape[0]
        done = torch.zeros(batch, dtype=torch.bool)
        toks, masks = [], []
        for _ in range(max_steps):
            tok, on_mask = self.next_token(s, generator)
            tok = torch.where(done, torch.full_like(tok, self.task.P), tok)
            toks.append(tok)
            masks.append(on_mask & ~done)
            s = self.step(s, tok)
            done = done | (tok == self.task.E)
            if bool(done.all()):
                break
        if not bool(done.all()):
            raise RuntimeError(f"{self.name} did not reach E within {max_steps} steps")
        return torch.stack(toks, 1), torch.stack(masks, 1)


def _keep(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, new, old)


class UpDown(Program):
    """Count up over the demos, flip phase at ``T``, count down over the responses; ``E`` at zero.

    For the Mod-4 and Round-3 variants the task's transform is applied to the count at
    ``T``, so the response phase counts down the transformed number. For Mod-4 the count
    is also reduced mod 4 whenever an intervention leaves the program in the response
    phase (``after_intervention``), as the original study's program does: writing 5 after
    the first response of ``B D D T R`` gives one more response (5 mod 4 = 1). Round-3 has
    no such step.
    """

    name = "up_down"
    variables = ("count", "phase")
    number_variable = "count"

    def init(self, n):
        z = torch.zeros_like(n)
        return {"count": z, "phase": z.clone(), "n": n.clone()}

    def step(self, s, tok):
        c, ph = s["count"], s["phase"]
        is_demo, is_resp, is_t = self._is_demo_token(s, tok), self._is_resp_token(s, tok), tok == self.task.T
        c = _keep(is_demo, c + 1, c)
        c = _keep(is_resp, c - 1, c)
        c = _keep(is_t, self.task.response_count(c), c)
        ph = _keep(is_t, torch.full_like(ph, RESPONSE), ph)
        return {"count": c, "phase": ph, "n": s["n"]}

    def after_intervention(self, s):
        s = dict(s)
        s["count"] = self._reduce_in_response(s["count"], s["phase"] == RESPONSE)
        return s

    def _decide(self, s):
        demo_code = torch.where(s["count"] >= s["n"], 1, 0)
        resp_code = torch.where(s["count"] > 0, 2, 3)
        return torch.where(s["phase"] == RESPONSE, resp_code, demo_code)


class UpUp(Program):
    """Count the demos up, then count the responses up; ``E`` once they are equal.

    The task's transform is applied to ``demo_count`` at ``T``. For Mod-4, ``demo_count``
    is also reduced mod 4 whenever an intervention leaves the program in the response
    phase [ours, by analogy with the original's Up-Down]; ``resp_count`` is never reduced.
    """

    name = "up_up"
    variables = ("demo_count", "resp_count", "phase")
    number_variable = "demo_count"

    def init(self, n):
        z = torch.zeros_like(n)
        return {"demo_count": z, "resp_count": z.clone(), "phase": z.clone(), "n": n.clone()}

    def step(self, s, tok):
        d, r, ph = s["demo_count"], s["resp_count"], s["phase"]
        is_demo, is_resp, is_t = self._is_demo_token(s, tok), self._is_resp_token(s, tok), tok == self.task.T
        d = _keep(is_demo, d + 1, d)
        d = _keep(is_t, self.task.response_count(d), d)
        r = _keep(is_resp, r + 1, r)
        ph = _keep(is_t, torch.full_like(ph, RESPONSE), ph)
        return {"demo_count": d, "resp_count": r, "phase": ph, "n": s["n"]}

    def after_intervention(self, s):
        s = dict(s)
        s["demo_count"] = self._reduce_in_response(s["demo_count"], s["phase"] == RESPONSE)
        return s

    def _decide(self, s):
        demo_code = torch.where(s["demo_count"] >= s["n"], 1, 0)
        resp_code = torch.where(s["resp_count"] < s["demo_count"], 2, 3)
        return torch.where(s["phase"] == RESPONSE, resp_code, demo_code)


class CtxDistr(Program):
    """Keep nothing between steps: recompute (demos seen - responses seen) from the tokens.

    The quantity is demos - responses in the demo phase (a response word emitted there,
    e.g. after a phase intervention, counts as a response; in SameObject the response
    word is the demo word, so there it counts as a demo) and
    ``response_count(demos) - responses`` once ``T`` is seen.

    An intervention sets an *override* that only the very next decision sees [ours];
    later decisions are recomputed from the token history, including the tokens the
    changed decision produced. For Mod-4 a count override is reduced mod 4 when the
    (possibly overridden) phase is the response phase [ours, by analogy with the
    original's Up-Down]; the recomputed count is never reduced again.
    """

    name = "ctx_distr"
    variables = ("count", "phase")
    number_variable = "count"

    def init(self, n):
        z = torch.zeros_like(n)
        return {"demos": z, "resps": z.clone(), "phase": z.clone(), "n": n.clone(),
                "count_override": z - 1, "phase_override": z - 1}

    def step(self, s, tok):
        dm, rs, ph = s["demos"], s["resps"], s["phase"]
        is_demo, is_t = self._is_demo_token(s, tok), tok == self.task.T
        # a response word seen outside the demo phase counts as a response
        is_resp = (tok == self.task.R) & ~is_demo
        dm = _keep(is_demo, dm + 1, dm)
        rs = _keep(is_resp, rs + 1, rs)
        ph = _keep(is_t, torch.full_like(ph, RESPONSE), ph)
        none = torch.full_like(dm, -1)
        return {"demos": dm, "resps": rs, "phase": ph, "n": s["n"], "count_override": none, "phase_override": none.clone()}

    def _recomputed_count(self, s):
        # the transform applies only once T is seen; before, the quantity is plain demos - responses
        demos = torch.where(s["phase"] == RESPONSE, self.task.response_count(s["demos"]), s["demos"])
        return demos - s["resps"]

    def read(self, s, var):
        self._check_var(var)
        o = s[f"{var}_override"]
        natural = self._recomputed_count(s) if var == "count" else s["phase"]
        return torch.where(o >= 0, o, natural)

    def write(self, s, var, value, rows=None):
        self._check_var(var)
        s = dict(s)
        value = torch.as_tensor(value, dtype=torch.long)
        key = f"{var}_override"
        s[key] = value if rows is None else torch.where(rows, value, s[key])
        return s

    def after_intervention(self, s):
        s = dict(s)
        o = s["count_override"]
        # only a written count (override >= 0) is reduced; -1 means "none"
        s["count_override"] = self._reduce_in_response(o, (o >= 0) & (self.read(s, "phase") == RESPONSE))
        return s

    def _decide(self, s):
        q, ph = self.read(s, "count"), self.read(s, "phase")
        demo_code = torch.where(q >= s["n"], 1, 0)
        resp_code = torch.where(q > 0, 2, 3)
        return torch.where(ph == RESPONSE, resp_code, demo_code)


PROGRAMS: dict[str, type[Program]] = {p.name: p for p in (UpDown, UpUp, CtxDistr)}
PROGRAM_NAMES: tuple[str, ...] = tuple(PROGRAMS)


def make_program(name: str, task: Task) -> Program:
    """Return the program called ``name`` (one of ``PROGRAM_NAMES``) for ``task``."""
    check_choice("program", name, PROGRAM_NAMES)
    return PROGRAMS[name](task)


def state_at(trace: dict[str, torch.Tensor], pos: torch.Tensor) -> State:
    """Gather each row's state at its own position: trace (batch, length), pos (batch,)."""
    return {k: v.gather(1, pos[:, None])[:, 0] for k, v in trace.items()}


def counterfactual(
    program: Program,
    target: Trials,
    pos: torch.Tensor,
    values: dict[str, torch.Tensor],
    rows: dict[str, torch.Tensor] | None = None,
    generator: torch.Generator | None = None,
    trace: dict[str, torch.Tensor] | None = None,
):
    """Overwrite variables after token ``pos`` of each target trial and roll out to ``E``.

    target: trials (batch, length); pos: (batch,) intervention positions.
    values: variable -> (batch,) values to write; rows: variable -> (batch,) bool, which
    rows write that variable (all when omitted). Once written, the program's
    ``after_intervention`` runs (Mod-4: the count is reduced in the response phase).
    Returns (tokens, task_mask): the counterfactual sequences ``target[:pos+1] + rollout``
    (batch, length') and their task mask, True on the predictable tokens after ``pos``.
    """
    trace = program.trace(target) if trace is None else trace
    s = state_at(trace, pos)
    for var, v in values.items():
        s = program.write(s, var, v, None if rows is None else rows.get(var))
    s = program.after_intervention(s)
    largest = max([int(target.counts.max())] + [int(v.max()) for v in values.values()])
    max_steps = 2 * largest + 10
    roll, roll_mask = program.rollout(s, max_steps, generator)
    batch = pos.shape[0]
    steps = roll.shape[1]
    L = int(pos.max()) + 1 + steps
    idx = torch.arange(L)[None, :]
    tokens = torch.full((batch, L), program.task.P, dtype=torch.long)
    Lt = min(target.tokens.shape[1], L)
    prefix = idx[:, :Lt] <= pos[:, None]
    tokens[:, :Lt] = torch.where(prefix, target.tokens[:, :Lt], tokens[:, :Lt])
    # place rollout step k at position pos + 1 + k
    k = idx - pos[:, None] - 1
    valid = (k >= 0) & (k < steps)
    kk = k.clamp(0, steps - 1)
    tokens = torch.where(valid, roll.gather(1, kk), tokens)
    mask = valid & roll_mask.gather(1, kk)
    used = used_length(tokens, program.task.P)  # trailing all-pad columns trimmed
    return tokens[:, :used], mask[:, :used]


def intervention_positions(trials: Trials, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one position per trial uniformly among its demo and response tokens: (batch,)."""
    return torch.multinomial(trials.demo_response_mask().float(), 1, generator=generator)[:, 0]

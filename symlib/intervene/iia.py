"""Interchange-intervention accuracy (IIA): run an intervention, score it, break it down.

Everything here measures; nothing trains (the search loop is in ``das``, the controls in
``controls``). The network is always frozen while it is measured (eval mode, so a user's
model left in train mode gives no dropout noise).

- ``PairStates``: a set of counterfactual pairs with the network's states at the target
  and source positions, computed once (the network does not change during a search).
- ``scored_logits``: the interchange at ``(site, pos)`` and the network's logits at the
  tokens after it (what the search loss and IIA score).
- ``evaluate_alignment``: trial IIA, IIA on the *changed* pairs, token IIA and loss.
- ``network_rollout``: what the intervened network answers by itself.
- ``iia_table``: IIA by two per-pair quantities (gradience).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from ..game.counterfactuals import CounterfactualPairs
from ..game.tasks import used_length
from ..networks.models import SequenceModel, free_run, greedy_rollout
from .alignment import AlignmentFunction


@contextlib.contextmanager
def frozen(model: SequenceModel):
    """Eval mode and no parameter gradients for the duration; restores both after."""
    was = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was)


@torch.no_grad()
def site_states(model: SequenceModel, tokens: torch.Tensor, pos: torch.Tensor, site: str | None, batch: int = 2048) -> torch.Tensor:
    """Return the state at each row's position, network frozen: tokens (N, L), pos (N,) -> (N, d) float32 on CPU."""
    out = []
    dev = model.device
    with frozen(model):
        for i in range(0, tokens.shape[0], batch):
            t, p = tokens[i:i + batch], pos[i:i + batch]
            L = int(p.max()) + 1
            out.append(model.state_at(t[:, :L].to(dev), site, p.to(dev)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.state_size(site))


@dataclass
class PairStates:
    """Counterfactual pairs with the states they need: H_t (N, d) at the targets' positions,
    H_s (N, d_s) at the sources' (from ``source_model`` when it is another network)."""

    pairs: CounterfactualPairs
    H_t: torch.Tensor
    H_s: torch.Tensor

    @classmethod
    def compute(cls, model: SequenceModel, pairs: CounterfactualPairs, site: str | None = None,
                source_model: SequenceModel | None = None, source_site: str | None = None) -> "PairStates":
        """Compute the target and source states of ``pairs`` once."""
        src = model if source_model is None else source_model
        return cls(pairs, site_states(model, pairs.tokens, pairs.pos, site),
                   site_states(src, pairs.src_tokens, pairs.src_pos, site if source_model is None else source_site))

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, idx: torch.Tensor, device) -> tuple:
        """Rows ``idx`` on ``device``, trimmed to their longest sequence:
        (tokens, task_mask, pos, h_t, h_s, swap)."""
        p = self.pairs
        tokens = p.tokens[idx]
        L = used_length(tokens)
        return (tokens[:, :L].to(device), p.task_mask[idx][:, :L].to(device), p.pos[idx].to(device),
                self.H_t[idx].to(device), self.H_s[idx].to(device), p.swap[idx].to(device))


def after_swap(tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Return (B, L) bool: positions t >= pos whose next token is not padding (what the loss scores)."""
    L = tokens.shape[1]
    t = torch.arange(L, device=tokens.device)[None, :]
    nxt = F.pad(tokens[:, 1:], (0, 1))
    return (t >= pos[:, None]) & (nxt != 0)


def scored_logits(model, align, tokens, task_mask, pos, h_t, h_s, swap, site, source=None):
    """Do the interchange at ``(site, pos)`` and return the logits at the positions after it.

    tokens, task_mask: (B, L) counterfactual sequences; pos: (B,); h_t: (B, d); h_s: (B, d_s);
    swap: (B, n_blocks) bool. ``source``: the source network's alignment (MAS), else ``align``.
    Returns logits (n, V), their targets (n,), whether each target is a task-mask token (n,),
    and each one's row (n,), in row-major order.
    """
    h = align.interchange(h_t, h_s, swap, source=source)
    sel = after_swap(tokens, pos)
    logits = model.run_with_state(tokens, site, pos, h, select=sel)
    nxt = F.pad(tokens[:, 1:], (0, 1))
    nxt_mask = F.pad(task_mask[:, 1:], (0, 1))
    rows = sel.nonzero(as_tuple=True)[0]
    return logits, nxt[sel], nxt_mask[sel], rows


def intervened_logits(model, align, tokens, pos, h_t, h_s, swap, site, source=None):
    """Return the logits of ``model`` on ``tokens`` with the interchange done at ``(site, pos)``: (B, L, V)."""
    h = align.interchange(h_t, h_s, swap, source=source)
    return model.run_with_state(tokens, site, pos, h, prefix=False)


def das_loss(logits, targets, on_mask, loss_on: str = "all"):
    """Cross-entropy on the tokens after the swap: every non-pad one ("all", the original's
    choice) or the task-mask ones only ("task_mask")."""
    if loss_on == "task_mask":
        logits, targets = logits[on_mask], targets[on_mask]
    return F.cross_entropy(logits, targets)


def _rate(x: torch.Tensor) -> float | None:
    return float(x.float().mean()) if x.numel() else None


@torch.no_grad()
def evaluate_alignment(model: SequenceModel, align: AlignmentFunction, data: CounterfactualPairs | PairStates,
                       site: str | None = None, batch: int = 1000, free_running: bool = True,
                       source_model: SequenceModel | None = None, source_align: AlignmentFunction | None = None,
                       swap: torch.Tensor | None = None, loss_on: str = "all") -> dict:
    """Measure IIA of ``align`` on ``model`` over counterfactual pairs.

    - ``iia``: trial IIA, the fraction of pairs whose every task-mask token is predicted as
      the program says (teacher-forced, which equals free running for this measure);
    - ``iia_changed``: the same on the pairs whose counterfactual differs from what the target
      would do anyway (``pairs.changed``): the chance-corrected number, None if there are none;
    - ``iia_token``: the fraction of task-mask tokens right when the network is fed its own
      outputs (free running; teacher-forced when ``free_running=False``);
    - ``loss``: the search loss on these pairs (``loss_on``: every token after the swap, or the
      task-mask tokens only, as the search scores them); ``n``, ``n_changed``;
      ``correct``: (N,) bool per pair.
    ``swap`` (N, n_blocks) overrides the pairs' own choice of blocks (all False: no swap).
    """
    site = model.check_site(site)
    st = data if isinstance(data, PairStates) else PairStates.compute(model, data, site, source_model)
    pairs = st.pairs
    was = align.training
    align.eval()
    dev = model.device
    correct, tok_ok, tok_n, loss_sum = [], 0, 0, 0.0
    try:
        # the alignment does not change here: its parametrised rotations are computed once
        with frozen(model), parametrize.cached():
            for i in range(0, len(pairs), batch):
                idx = torch.arange(i, min(i + batch, len(pairs)))
                tokens, task_mask, pos, ht, hs, sw = st.batch(idx, dev)
                if swap is not None:
                    sw = swap[idx].to(dev)
                logits, tgt, on_mask, rows = scored_logits(model, align, tokens, task_mask, pos, ht, hs, sw, site, source_align)
                loss_sum += float(das_loss(logits, tgt, on_mask, loss_on)) * len(idx)
                wrong = (logits.argmax(-1) != tgt) & on_mask
                correct.append((torch.bincount(rows[wrong], minlength=len(idx)) == 0).cpu())
                m = task_mask[:, 1:]
                if free_running:
                    fn = lambda inp: intervened_logits(model, align, inp, pos, ht, hs, sw, site, source_align)
                    full, _ = free_run(model, tokens, task_mask, logits_fn=fn)
                    tok_ok += int(((full[:, :-1].argmax(-1) == tokens[:, 1:]) & m).sum())
                else:
                    tok_ok += int((~wrong & on_mask).sum())
                tok_n += int(m.sum())
    finally:
        align.train(was)
    correct = torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)
    changed = pairs.changed.bool()
    return {"iia": _rate(correct), "iia_changed": _rate(correct[changed]), "iia_token": tok_ok / max(tok_n, 1),
            "loss": loss_sum / max(len(pairs), 1), "n": len(pairs), "n_changed": int(changed.sum()), "correct": correct}


def split_metrics(ev: dict, split: str) -> dict:
    """Name ``evaluate_alignment``'s numbers by their split: iia_test, iia_changed_test, ..."""
    return {f"iia_{split}": ev["iia"], f"iia_changed_{split}": ev["iia_changed"], f"iia_token_{split}": ev["iia_token"],
            f"n_{split}": ev["n"], f"n_changed_{split}": ev["n_changed"]}


def pair_rows(pairs: CounterfactualPairs, correct: torch.Tensor) -> dict:
    """Per-pair quantities as numpy arrays (for ``iia_table`` and tidy tables)."""
    rows = {k: getattr(pairs, k).numpy() for k in ("target_count", "source_count", "target_value", "source_value",
                                                   "target_phase", "source_phase", "changed")}
    rows["swap"] = pairs.swap.numpy()
    rows["correct"] = correct.numpy()
    return rows


@torch.no_grad()
def network_rollout(model: SequenceModel, align: AlignmentFunction, data: CounterfactualPairs, site: str | None = None,
                    extra: int = 12, source_model: SequenceModel | None = None, source_align: AlignmentFunction | None = None) -> torch.Tensor:
    """Return what the intervened network itself produces: (N, L + extra), cut at its ``E``.

    The counterfactual's tokens off the task mask are given (demo tokens and ``T`` come from
    the environment); every task-mask token is the network's own, and it may run ``extra``
    tokens past the program's ``E``.
    """
    site = model.check_site(site)
    st = PairStates.compute(model, data, site, source_model)
    dev = model.device
    tokens, pos, swap = data.tokens.to(dev), data.pos.to(dev), data.swap.to(dev)
    ht, hs = st.H_t.to(dev), st.H_s.to(dev)
    was = align.training
    align.eval()
    try:
        with frozen(model):
            fn = lambda inp: intervened_logits(model, align, inp, pos, ht, hs, swap, site, source_align)
            out = greedy_rollout(model, tokens, data.task_mask.to(dev), extra=extra, logits_fn=fn)
    finally:
        align.train(was)
    return out.cpu()


def iia_table(rows: dict, by: str = "source_value", against: str = "target_count", max_value: int | None = None):
    """Break IIA down by two per-pair quantities: returns (values_by, values_against, matrix).

    The matrix holds the trial IIA of the pairs in each cell (NaN where no pair falls).
    """
    a, b, ok = rows[by], rows[against], rows["correct"].astype(float)
    va, vb = np.unique(a), np.unique(b)
    if max_value is not None:
        va, vb = va[va <= max_value], vb[vb <= max_value]
    M = np.full((len(va), len(vb)), np.nan)
    for i, x in enumerate(va):
        for j, y in enumerate(vb):
            sel = (a == x) & (b == y)
            if sel.any():
                M[i, j] = ok[sel].mean()
    return va, vb, M

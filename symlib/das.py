"""Distributed Alignment Search: train an alignment on a frozen network, measure IIA, run controls.

The network is frozen; only the alignment function learns, by cross-entropy of the
network's predictions on the counterfactual sequence after the intervention (SPEC
section 5). States at the intervention sites are computed once (the network does not
change), so a training step is an interchange plus the network's continuation.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .alignment import ALIGNMENT_NAMES, AlignmentFunction, make_alignment
from .counterfactuals import VARIABLE_NAMES, CounterfactualPairs, make_pairs, variable_blocks
from .models import SequenceModel, free_run, greedy_rollout
from .programs import PROGRAM_NAMES, make_program
from .tasks import Task
from .utils import atomic_torch_save, check_choice

ALIGNMENT_FORMAT = "symlib-alignment/1"


@dataclass
class DASConfig:
    """One alignment search (SPEC section 5 defaults)."""

    program: str = "up_down"
    variable: str = "count"
    alignment: str = "orthogonal"
    n_units: int = 16
    site: Optional[str] = None  # default: the model's default site
    lr: float = 1e-3
    batch_size: int = 128
    n_train: int = 10_000
    n_val: int = 1_000
    max_steps: int = 20_000
    eval_every: int = 50
    target_iia: float = 0.995  # stop once validation trial IIA reaches this
    patience: int = 10  # ... or once validation loss has not improved for this many evaluations
    loss_on: str = "all"  # "all": every non-pad token after the swap (the original); "graded": task-mask tokens only
    counts: str = "train"
    seed: int = 0
    anneal_steps: int = 500  # boundless: temperature goes 1 -> 0.05 over these steps

    def __post_init__(self):
        check_choice("program", self.program, PROGRAM_NAMES)
        check_choice("variable", self.variable, VARIABLE_NAMES)
        check_choice("alignment function", self.alignment, ALIGNMENT_NAMES)
        check_choice("loss_on", self.loss_on, ("all", "graded"))
        if self.n_units < 0:
            raise ValueError(f"n_units must be >= 0, got {self.n_units}")
        if self.alignment == "boundless" and self.variable == "count_phase":
            raise ValueError("a boundless alignment learns the size of one block; use 'orthogonal' for count_phase")
        for name in ("batch_size", "n_train", "n_val", "max_steps", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class DASResult:
    """What ``run_das`` returns."""

    alignment: AlignmentFunction
    config: DASConfig
    metrics: dict
    history: list = field(default_factory=list)
    rows: dict = field(default_factory=dict)  # per validation pair: correct, counts, values (numpy)


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
    """States at each row's position, in batches: tokens (N, L), pos (N,) -> (N, d) float32 on CPU."""
    out = []
    dev = model.device
    for i in range(0, tokens.shape[0], batch):
        t, p = tokens[i:i + batch], pos[i:i + batch]
        L = int(p.max()) + 1
        out.append(model.state_at(t[:, :L].to(dev), site, p.to(dev)).float().cpu())
    return torch.cat(out)


def _trim(tokens: torch.Tensor) -> int:
    nz = (tokens != 0).long() * torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
    return int(nz.max())


def intervened_logits(model, align, tokens, pos, h_t, h_s, swap, site, source=None):
    """Logits of ``model`` on ``tokens`` with the interchange done at ``(site, pos)``: (B, L, V)."""
    h = align.interchange(h_t, h_s, swap, source=source)
    return model.run_with_state(tokens, site, pos, h, prefix=False)


def after_swap(tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: positions t >= pos whose next token is not padding (what the loss scores)."""
    L = tokens.shape[1]
    t = torch.arange(L, device=tokens.device)[None, :]
    nxt = torch.nn.functional.pad(tokens[:, 1:], (0, 1))
    return (t >= pos[:, None]) & (nxt != 0)


def scored_logits(model, align, tokens, graded, pos, h_t, h_s, swap, site, source=None):
    """Logits, targets and graded flags at the positions after the swap: (n, V), (n,), (n,), plus row ids (n,)."""
    h = align.interchange(h_t, h_s, swap, source=source)
    sel = after_swap(tokens, pos)
    logits = model.run_with_state(tokens, site, pos, h, select=sel)
    nxt = torch.nn.functional.pad(tokens[:, 1:], (0, 1))
    nxt_graded = torch.nn.functional.pad(graded[:, 1:], (0, 1))
    rows = sel.nonzero(as_tuple=True)[0]
    return logits, nxt[sel], nxt_graded[sel], rows


def das_loss(logits, targets, graded, loss_on="all"):
    """Cross-entropy on the tokens after the swap: every non-pad one, or the graded ones only."""
    if loss_on == "graded":
        logits, targets = logits[graded], targets[graded]
    return F.cross_entropy(logits, targets)


def _batch(data: CounterfactualPairs, H_t, H_s, idx, dev):
    tokens = data.tokens[idx]
    L = _trim(tokens)
    return (tokens[:, :L].to(dev), data.task_mask[idx][:, :L].to(dev), data.pos[idx].to(dev),
            H_t[idx].to(dev), H_s[idx].to(dev), data.swap[idx].to(dev))


@torch.no_grad()
def evaluate_alignment(
    model: SequenceModel, align: AlignmentFunction, data: CounterfactualPairs, site: str | None = None,
    H_t=None, H_s=None, batch: int = 1000, free_running: bool = True, source_model: SequenceModel | None = None,
    source_align: AlignmentFunction | None = None,
) -> dict:
    """IIA of ``align`` on ``model`` over the pairs ``data``.

    Trial IIA: fraction of pairs whose every graded token is predicted as the program says
    (teacher-forced, which equals free running for this measure). Token IIA: fraction of
    graded tokens right when the network is fed its own outputs (free running).
    Returns metrics plus ``correct`` (N,) bool and ``loss``.
    """
    site = model.check_site(site)
    src_model = model if source_model is None else source_model
    H_t = site_states(model, data.tokens, data.pos, site) if H_t is None else H_t
    H_s = site_states(src_model, data.src_tokens, data.src_pos, site if source_model is None else None) if H_s is None else H_s
    was = align.training
    align.eval()
    dev = model.device
    correct, tok_ok, tok_n, loss_sum = [], 0, 0, 0.0
    with frozen(model):
        for i in range(0, len(data), batch):
            idx = torch.arange(i, min(i + batch, len(data)))
            tokens, graded, pos, ht, hs, swap = _batch(data, H_t, H_s, idx, dev)
            logits, tgt, gr, rows = scored_logits(model, align, tokens, graded, pos, ht, hs, swap, site, source_align)
            loss_sum += float(das_loss(logits, tgt, gr)) * len(idx)
            wrong = (logits.argmax(-1) != tgt) & gr
            ok = torch.bincount(rows[wrong], minlength=len(idx)) == 0
            correct.append(ok.cpu())
            g = graded[:, 1:]
            if free_running:
                fn = lambda inp: intervened_logits(model, align, inp, pos, ht, hs, swap, site, source_align)
                full, _ = free_run(model, tokens, graded, logits_fn=fn)
                right = (full[:, :-1].argmax(-1) == tokens[:, 1:]) & g
                tok_ok += int(right.sum())
            else:
                tok_ok += int((~wrong & gr).sum())
            tok_n += int(g.sum())
    align.train(was)
    correct = torch.cat(correct)
    return {"iia_trial": float(correct.float().mean()), "iia_token": tok_ok / max(tok_n, 1),
            "loss": loss_sum / len(data), "correct": correct}


def run_das(
    model: SequenceModel,
    task: Task,
    cfg: DASConfig | None = None,
    train_data: CounterfactualPairs | None = None,
    val_data: CounterfactualPairs | None = None,
    progress: bool = True,
    train_alignment: bool = True,
    **overrides,
) -> DASResult:
    """Search for an alignment of ``cfg.variable`` of ``cfg.program`` in the frozen ``model``.

    Pairs are made from ``task`` (seeded by ``cfg.seed``) unless given. With
    ``train_alignment=False`` the alignment is evaluated as initialised (the
    random-rotation control).
    """
    cfg = DASConfig(**{**(asdict(cfg) if cfg else {}), **overrides})
    site = model.check_site(cfg.site)
    d = model.state_size(site)
    prog = make_program(cfg.program, task)
    n_blocks = len(variable_blocks(prog, cfg.variable))
    if cfg.n_units * n_blocks > d:
        raise ValueError(f"n_units={cfg.n_units} x {n_blocks} block(s) = {cfg.n_units * n_blocks} dims is wider than the state at site {site!r} ({d} dims)")
    if train_data is None:
        train_data = make_pairs(task, prog, cfg.variable, cfg.n_train, cfg.counts, seed=cfg.seed)
    if val_data is None:
        val_data = make_pairs(task, prog, cfg.variable, cfg.n_val, cfg.counts, seed=cfg.seed + 7919)
    align = make_alignment(cfg.alignment, d, [cfg.n_units] * n_blocks if cfg.alignment != "boundless" else None, seed=cfg.seed)
    dev = model.device
    align.to(dev)
    t_start = time.perf_counter()
    with frozen(model):
        H_t = site_states(model, train_data.tokens, train_data.pos, site)
        H_s = site_states(model, train_data.src_tokens, train_data.src_pos, site)
        V_t = site_states(model, val_data.tokens, val_data.pos, site)
        V_s = site_states(model, val_data.src_tokens, val_data.src_pos, site)
    history: list[dict] = []
    step, stopped = 0, "not trained (initial alignment)"
    if train_alignment and cfg.n_units > 0:
        opt = torch.optim.Adam(align.param_groups(cfg.lr))
        g = torch.Generator().manual_seed(cfg.seed + 1)
        best, since_best = math.inf, 0
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.max_steps, desc=f"DAS {cfg.alignment} {cfg.variable}", unit="step")
        perm, cursor = torch.randperm(len(train_data), generator=g), 0
        stopped = f"max_steps={cfg.max_steps} reached"
        try:
            with frozen(model):
                while step < cfg.max_steps:
                    if cursor + cfg.batch_size > len(train_data):
                        perm, cursor = torch.randperm(len(train_data), generator=g), 0
                    idx = perm[cursor:cursor + cfg.batch_size]
                    cursor += cfg.batch_size
                    if cfg.alignment == "boundless":
                        align.set_temperature(max(0.05, 0.05 ** min(step / cfg.anneal_steps, 1.0)))
                    align.train()
                    tokens, graded, pos, ht, hs, swap = _batch(train_data, H_t, H_s, idx, dev)
                    logits, tgt, gr, _ = scored_logits(model, align, tokens, graded, pos, ht, hs, swap, site)
                    loss = das_loss(logits, tgt, gr, cfg.loss_on) + align.penalty()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    step += 1
                    if bar is not None:
                        bar.update(1)
                    if step % cfg.eval_every == 0 or step == cfg.max_steps:
                        ev = evaluate_alignment(model, align, val_data, site, V_t, V_s, free_running=False)
                        rec = {"step": step, "seconds": round(time.perf_counter() - t_start, 3), "train_loss": loss.item(),
                               "val_loss": ev["loss"], "val_iia": ev["iia_trial"]}
                        if cfg.alignment == "boundless":
                            rec["n_units"] = align.n_units
                        history.append(rec)
                        if bar is not None:
                            bar.set_postfix(iia=f"{ev['iia_trial']:.3f}")
                        if ev["iia_trial"] >= cfg.target_iia:
                            stopped = f"validation trial IIA >= {cfg.target_iia}"
                            break
                        if ev["loss"] < best - 1e-4:
                            best, since_best = ev["loss"], 0
                        else:
                            since_best += 1
                            if since_best >= cfg.patience and (cfg.alignment != "boundless" or step >= cfg.anneal_steps):
                                stopped = f"validation loss plateaued for {cfg.patience} evaluations"
                                break
        finally:
            if bar is not None:
                bar.close()
    seconds = time.perf_counter() - t_start
    ev = evaluate_alignment(model, align, val_data, site, V_t, V_s, free_running=True)
    first_95 = next((r for r in history if r["val_iia"] >= 0.95), None)
    metrics = {
        "iia_trial": ev["iia_trial"], "iia_token": ev["iia_token"], "val_loss": ev["loss"],
        "steps": step, "seconds": round(seconds, 3), "stopped_because": stopped,
        "seconds_to_iia_0.95": first_95["seconds"] if first_95 else None,
        "n_units": align.n_units if cfg.alignment == "boundless" else cfg.n_units,
        "learned_n_units": align.n_units if cfg.alignment == "boundless" else None,
        "changed_fraction": float(val_data.changed.float().mean()),
    }
    rows = {k: getattr(val_data, k).numpy() for k in ("target_count", "source_count", "target_value", "source_value", "target_phase", "source_phase", "changed")}
    rows["correct"] = ev["correct"].numpy()
    rows["swap"] = val_data.swap.numpy()
    return DASResult(align, cfg, metrics, history, rows)


@torch.no_grad()
def network_rollout(model: SequenceModel, align: AlignmentFunction, data: CounterfactualPairs, site: str | None = None,
                    extra: int = 12, source_model: SequenceModel | None = None, source_align: AlignmentFunction | None = None) -> torch.Tensor:
    """What the intervened network itself produces: the counterfactual's ungraded tokens are given
    (demo tokens and ``T`` come from the environment), every graded token is the network's own,
    and it may run ``extra`` tokens past the program's ``E``. Returns (N, L + extra), cut at its ``E``.
    """
    site = model.check_site(site)
    src = model if source_model is None else source_model
    ht = site_states(model, data.tokens, data.pos, site).to(model.device)
    hs = site_states(src, data.src_tokens, data.src_pos, site if source_model is None else None).to(model.device)
    tokens, pos, swap = data.tokens.to(model.device), data.pos.to(model.device), data.swap.to(model.device)
    was = align.training
    align.eval()
    with frozen(model):
        fn = lambda inp: intervened_logits(model, align, inp, pos, ht, hs, swap, site, source_align)
        out = greedy_rollout(model, tokens, data.task_mask.to(model.device), extra=extra, logits_fn=fn)
    align.train(was)
    return out.cpu()


def iia_table(rows: dict, by: str = "source_value", against: str = "target_count", max_value: int | None = None):
    """IIA broken down by two per-pair quantities: returns (values_by, values_against, matrix).

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


def das_controls(model: SequenceModel, task: Task, cfg: DASConfig | None = None, untrained_model: SequenceModel | None = None,
                 train_data=None, val_data=None, progress: bool = False, **overrides) -> dict:
    """The controls a careful reader expects, each as a trial IIA on the same validation pairs.

    no_swap: the network left alone (how often the counterfactual equals what it would do anyway);
    random_rotation: the alignment as initialised, untrained; shuffled: trained on labels whose
    sources were shuffled; untrained: the same search on an untrained network of the same kind.
    """
    cfg = DASConfig(**{**(asdict(cfg) if cfg else {}), **overrides})
    prog = make_program(cfg.program, task)
    train_data = make_pairs(task, prog, cfg.variable, cfg.n_train, cfg.counts, seed=cfg.seed) if train_data is None else train_data
    val_data = make_pairs(task, prog, cfg.variable, cfg.n_val, cfg.counts, seed=cfg.seed + 7919) if val_data is None else val_data
    out = {}
    site = model.check_site(cfg.site)
    nb = train_data.swap.shape[1]
    none = make_alignment("orthogonal", model.state_size(site), [cfg.n_units] * nb)
    none_ev = evaluate_alignment(model, none.to(model.device), val_data, site, batch=1000, free_running=False,
                                 H_s=site_states(model, val_data.tokens, val_data.pos, site))  # source = target: a no-op swap
    out["control_no_swap_iia"] = none_ev["iia_trial"]
    r = run_das(model, task, cfg, train_data, val_data, progress=False, train_alignment=False)
    out["control_random_rotation_iia"] = r.metrics["iia_trial"]
    r = run_das(model, task, cfg, train_data.shuffled_sources(torch.Generator().manual_seed(cfg.seed + 3)), val_data, progress=progress)
    out["control_shuffled_iia"] = r.metrics["iia_trial"]
    if untrained_model is not None:
        r = run_das(untrained_model, task, cfg, train_data, val_data, progress=progress)
        out["control_untrained_iia"] = r.metrics["iia_trial"]
    return out


def save_alignment(path: str | Path, result: DASResult) -> None:
    """Save an alignment and the config that found it (loadable with weights_only)."""
    a = result.alignment
    atomic_torch_save({"format": ALIGNMENT_FORMAT, "describe": json.dumps(a.describe()), "config": json.dumps(asdict(result.config)),
                       "metrics": json.dumps({k: v for k, v in result.metrics.items()}), "state_dict": a.state_dict()}, path)


def load_alignment(path: str | Path) -> tuple[AlignmentFunction, DASConfig, dict]:
    """Load an alignment saved by ``save_alignment``: (alignment in eval mode, config, metrics)."""
    st = torch.load(path, weights_only=True, map_location="cpu")
    if st.get("format") != ALIGNMENT_FORMAT:
        raise ValueError(f"{path} is not a symlib alignment (format {st.get('format')!r})")
    desc = json.loads(st["describe"])
    kind = desc["kind"]
    a = make_alignment(kind, desc["d"], None if kind == "boundless" else desc["block_sizes"])
    a.load_state_dict(st["state_dict"])
    return a.eval(), DASConfig(**json.loads(st["config"])), json.loads(st["metrics"])

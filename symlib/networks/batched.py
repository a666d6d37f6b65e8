"""Several seeds of one recurrent network trained together, as one batched network.

``train_seeds([0, 1, 2, 3, 4], arch="gru")`` trains five GRUs that differ only in their seed.
Their weights are stacked along a new first axis (seed), so every matrix product of a
step runs for all of them at once (``torch.bmm``) and the fixed cost of a step (Python,
small-kernel overhead, the token-by-token free run) is paid once instead of five times.
Each seed keeps everything of its own: its initial weights, training trials, data order,
dropout masks (drawn from its own random stream, in the same order and shapes as a lone
run), its evaluations, its stopping point (a stopped seed's weights are frozen while
the others go on) and its run folder in the format ``training.train`` writes. So the
result equals training the seeds one by one up to float error (the stacked products
round differently from torch's fused RNN kernels), a run can be resumed by either
trainer, and chapters load the runs as usual.

Only one-layer GRUs and LSTMs are stacked; other networks (Transformers) are trained one
after another by ``training.train``. Equality with lone runs holds on the CPU; on a GPU a
lone run draws dropout on the GPU's generator, so the two differ there by their masks.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from ..paths import runs_dir
from ..utils import resolve_device, seed_everything
from .models import RecurrentModel, build_model
from .training import RunResult, TrainConfig, _Run, _summarise, lr_at, train

STACKABLE = ("gru", "lstm")


class StackedRNN:
    """The weights of K one-layer recurrent ``RecurrentModel``s of one config, stacked: (K, ...)."""

    def __init__(self, models: Sequence[RecurrentModel]):
        m0 = models[0]
        if not all(isinstance(m, RecurrentModel) and m.config == m0.config for m in models) or m0.config.n_layers != 1:
            raise ValueError("StackedRNN stacks one-layer GRUs or LSTMs of one config")
        self.is_lstm, self.H, self.p_drop = m0.is_lstm, m0.hidden, float(m0.config.dropout)
        self.names = [n for n, _ in m0.named_parameters()]
        self.params = {n: torch.nn.Parameter(torch.stack([dict(m.named_parameters())[n].detach() for m in models]).clone())
                       for n in self.names}

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.params[n] for n in self.names]

    @torch.no_grad()
    def copy_to(self, k: int, model: RecurrentModel) -> None:
        """Write seed k's weights into ``model``."""
        for n, p in model.named_parameters():
            p.copy_(self.params[n][k])

    # ---- the network, for a subset of seeds ``P`` (name -> (k, ...)) ----
    @staticmethod
    def take(params: dict, idx: torch.Tensor | None) -> dict:
        return params if idx is None else {n: p[idx] for n, p in params.items()}

    @staticmethod
    def embed(P: dict, tokens: torch.Tensor) -> torch.Tensor:
        """(k, ...) -> (k, ..., H)."""
        W = P["embed.weight"]
        seeds = torch.arange(W.shape[0], device=W.device).view(-1, *([1] * (tokens.dim() - 1)))
        return W[seeds, tokens]

    def cell(self, P: dict, gi: torch.Tensor, hx):
        """One step from input projections gi (k, B, G) and state hx: returns the new state."""
        gh = torch.baddbmm(P["rnn.bias_hh_l0"][:, None, :], hx[0] if self.is_lstm else hx, P["rnn.weight_hh_l0"].transpose(1, 2))
        if self.is_lstm:
            h, c = hx
            i, f, g, o = (gi + gh).chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        ir, iz, in_ = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return (1 - z) * n + z * hx

    def zero_state(self, k: int, B: int, like: torch.Tensor):
        z = like.new_zeros(k, B, self.H)
        return (z, z.clone()) if self.is_lstm else z

    @staticmethod
    def input_proj(P: dict, x: torch.Tensor) -> torch.Tensor:
        """x (k, N, H) -> (k, N, G)."""
        return torch.baddbmm(P["rnn.bias_ih_l0"][:, None, :], x, P["rnn.weight_ih_l0"].transpose(1, 2))

    def run(self, P: dict, tokens: torch.Tensor, pk: "_Packing", feed: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states after each input, packed as ``pk`` says: tokens (k, B, T) -> (k, S, H).

        Rows are sorted longest first, so the rows still running at step t are a prefix
        that only shrinks: each step computes ``pk.A[t]`` rows, not B (a lone network's
        packed sequence skips its padding the same way).

        ``feed`` (k, B, T): a free run in the same pass. At a fed position the input is the
        previous step's dropout-free argmax instead of the given token. The recurrence has no
        dropout, so the states of the free run are the states the loss needs: one pass where
        a lone network runs the prefix once, then the free run and the gradient pass over the
        continuation.
        """
        gi = self.input_proj(P, self.embed(P, pk.pack(tokens)))
        hx = self.zero_state(tokens.shape[0], pk.A[0], gi)
        fed = pk.sort(feed) if feed is not None else None
        tok_s = pk.sort(tokens) if feed is not None else None
        emb_w, seeds = P["embed.weight"], torch.arange(tokens.shape[0], device=tokens.device)[:, None]
        out, pred = [], None
        for t, (a, g) in enumerate(zip(pk.A, gi.split(pk.A, 1))):
            if pred is not None:  # fed rows take the network's own last prediction
                f = fed[:, :a, t]
                x_tok = torch.where(f, pred[:, :a], tok_s[:, :a, t])
                g = torch.where(f[..., None], self.input_proj(P, emb_w[seeds, x_tok]), g)
            hx = (hx[0][:, :a], hx[1][:, :a]) if self.is_lstm else hx[:, :a]
            hx = self.cell(P, g, hx)
            h = hx[0] if self.is_lstm else hx
            out.append(h)
            nxt = pk.A[t + 1] if t + 1 < len(pk.A) else 0
            pred = None
            if fed is not None and nxt and bool(fed[:, :nxt, t + 1].any()):
                with torch.no_grad():
                    pred = self.head(P, h.detach()).argmax(-1)
        return torch.cat(out, 1)

    @staticmethod
    def head(P: dict, h: torch.Tensor, keep: torch.Tensor | None = None, p: float = 0.0) -> torch.Tensor:
        """Read-out: h (k, N, H) -> logits (k, N, V); ``keep`` (k, N, 4H) a dropout mask."""
        a = F.gelu(torch.baddbmm(P["readout.0.bias"][:, None, :], h, P["readout.0.weight"].transpose(1, 2)))
        if keep is not None:
            a = a * keep * (1.0 / (1.0 - p))  # as FastDropout
        return torch.baddbmm(P["readout.3.bias"][:, None, :], a, P["readout.3.weight"].transpose(1, 2))

    @torch.no_grad()
    def evaluate(self, P: dict, trial_sets: list[dict], batch_size: int = 1000, chunk: int = 8192) -> list[dict]:
        """``training.evaluate`` for every seed of ``P`` at once: ``trial_sets`` holds, per seed, its
        evaluation sets (name -> Trials, the same names for all). Teacher-forced, dropout off, one
        pass over all the sets' rows; the loss of a set is averaged over chunks of ``batch_size``
        trials weighted by their size, as ``evaluate`` does. Returns per seed
        {f"{metric}_{set}": value}, the keys ``_Run.record`` writes."""
        names = list(trial_sets[0])
        dev = P["embed.weight"].device
        L = max(ts[n].tokens.shape[1] for ts in trial_sets for n in names)
        tok = torch.stack([torch.cat([F.pad(ts[n].tokens, (0, L - ts[n].tokens.shape[1])) for n in names]) for ts in trial_sets]).to(dev)
        msk = torch.stack([torch.cat([F.pad(ts[n].task_mask, (0, L - ts[n].task_mask.shape[1])) for n in names]) for ts in trial_sets]).to(dev)
        sizes = [len(trial_sets[0][n]) for n in names]
        if any(len(ts[n]) != m for ts in trial_sets for n, m in zip(names, sizes)):
            raise ValueError("every seed's evaluation sets must have the same sizes")
        k, B = tok.shape[:2]
        pk = _Packing((tok[:, :, 1:] != 0).sum(2), L - 1)
        h = self.run(P, tok[:, :, :L - 1], pk)
        tgt, g = pk.pack(tok[:, :, 1:]), pk.pack(msk[:, :, 1:])
        pred, ce = [], []
        for s in range(0, h.shape[1], chunk):
            logits = self.head(P, h[:, s:s + chunk])
            pred.append(logits.argmax(-1))
            ce.append(F.cross_entropy(logits.transpose(1, 2), tgt[:, s:s + chunk], ignore_index=0, reduction="none"))
        pred, ce = torch.cat(pred, 1), torch.cat(ce, 1)
        # each packed cell's row (as given), its set, and its chunk of batch_size trials within the set
        row = pk.order.gather(1, (pk.idx // pk.T)[None, :].expand(k, -1))
        first = torch.tensor([0] + sizes[:-1], device=dev).cumsum(0)
        set_of = torch.cat([torch.full((m,), i, device=dev) for i, m in enumerate(sizes)])
        chunk_of = torch.cat([torch.arange(m, device=dev) // batch_size for m in sizes])
        n_chunks = [(m + batch_size - 1) // batch_size for m in sizes]
        chunk_base = torch.tensor([0] + n_chunks[:-1], device=dev).cumsum(0)
        group = (chunk_base[set_of] + chunk_of)[row]  # (k, S)
        valid, right = tgt != 0, pred == tgt
        G = sum(n_chunks)

        def per(values: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
            return torch.zeros(k, n, device=dev, dtype=values.dtype).scatter_add_(1, index, values)

        ce_sum, n_tgt = per(ce * valid, group, G), per(valid.double(), group, G).to(ce.dtype)
        rows_per_group = torch.cat([torch.tensor([min(batch_size, m - j * batch_size) for j in range(c)]) for m, c in zip(sizes, n_chunks)]).to(dev)
        wrong_rows = per(((~right) & g).long(), row, B) > 0  # (k, B): a trial with any wrong task token
        tok_right, tok_n = per((right & g).double(), set_of[row], len(names)), per(g.double(), set_of[row], len(names))
        out = []
        for i in range(k):
            rec = {}
            for j, name in enumerate(names):
                gs = slice(int(chunk_base[j]), int(chunk_base[j]) + n_chunks[j])
                chunk_loss = ce_sum[i, gs] / n_tgt[i, gs]
                rec[f"loss_{name}"] = float((chunk_loss.double() * rows_per_group[gs]).sum()) / sizes[j]
                rec[f"token_acc_{name}"] = float(tok_right[i, j]) / max(float(tok_n[i, j]), 1.0)
                ok = ~wrong_rows[i, int(first[j]):int(first[j]) + sizes[j]]
                rec[f"trial_acc_{name}"] = int(ok.sum()) / sizes[j]
            out.append(rec)
        return out


class _Packing:
    """Rows of K batches sorted longest first (each seed its own order), and the packed,
    time-major layout of their steps: at step t the first ``A[t]`` sorted rows of every
    seed (A[t]: the most rows any seed still runs)."""

    def __init__(self, lengths: torch.Tensor, T: int):
        k, B = lengths.shape
        self.T = T
        self.order = torch.sort(lengths, dim=1, descending=True, stable=True).indices
        self.inv = self.order.argsort(dim=1)
        len_s = lengths.gather(1, self.order)
        A = (len_s[:, :, None] > torch.arange(T, device=lengths.device)).sum(1).amax(0)
        self.A = [int(a) for a in A if int(a) > 0]
        self.offset = torch.tensor([0] + self.A[:-1], device=lengths.device).cumsum(0)
        self.idx = torch.cat([torch.arange(a, device=lengths.device) * T + t for t, a in enumerate(self.A)])

    def sort(self, x: torch.Tensor) -> torch.Tensor:
        """(k, B, T) -> rows in each seed's sorted order."""
        return x.gather(1, self.order[:, :, None].expand_as(x))

    def unsort(self, x: torch.Tensor) -> torch.Tensor:
        return x.gather(1, self.inv[:, :, None].expand_as(x))

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(k, B, T) -> (k, S): the cells the packed steps run, in their order."""
        k, B, T = x.shape
        return self.sort(x).reshape(k, B * T)[:, self.idx]

    def flat(self, i: int, cells: torch.Tensor) -> torch.Tensor:
        """Where seed i's grid cells (flat b * T + t) lie in the packed layout."""
        b, t = cells // self.T, cells % self.T
        return self.offset[t] + self.inv[i, b]


def _packed_order(grid: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The order in which ``pack_padded_sequence`` lays out the cells of ``grid`` (B, T) with
    ``lengths``: the row order of a lone network's packed read-out."""
    return pack_padded_sequence(grid, lengths.cpu(), batch_first=True, enforce_sorted=False).data


def loss_rows(tokens: torch.Tensor, feed: torch.Tensor | None, pad: int = 0) -> torch.Tensor:
    """Flat indices into the (B, L-1) grid of next-token predictions, in the order a lone
    ``RecurrentModel`` computes its training loss (``free_running_loss`` when ``feed`` is
    given, else ``training_loss``): its dropout mask lines up with these rows."""
    B, L = tokens.shape
    grid = torch.arange(B * (L - 1), device=tokens.device).view(B, L - 1)
    n = (tokens[:, 1:] != pad).sum(1)
    t = torch.arange(L - 1, device=tokens.device)[None, :]
    padded_at_end = not bool((tokens[:, 1:][t >= n[:, None]] != pad).any())
    if feed is not None and bool(feed.any(1).all()) and padded_at_end:
        start, _ = RecurrentModel.feed_span(feed)  # the lone network's own rule
        c = n - start - 1
        if bool((c >= 1).all()):  # the lone network's fused path: prefix, then the continuation
            pre = _packed_order(grid, start + 1)
            k = torch.arange(int(c.max()), device=tokens.device)[None, :]
            cont = grid.gather(1, (k + start[:, None] + 1).clamp(max=L - 2))
            return torch.cat([pre, _packed_order(cont, c)])
    if bool((n == 0).any()) or not padded_at_end:
        return grid[tokens[:, 1:] != pad]  # row-major, as SequenceModel.nonpad_logits
    return _packed_order(grid, n)


def _dropout_keep(n_rows: int, width: int, p: float, rng: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FastDropout's mask for (n_rows, width), drawn from the CPU random state ``rng``;
    returns (keep, the state after)."""
    saved = torch.get_rng_state()
    try:
        torch.set_rng_state(rng)
        n = n_rows * width
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64)
        keep = words.view(torch.int16)[:n].view(n_rows, width) >= (-32768 + round(p * 65536))
        return keep, torch.get_rng_state()
    finally:
        torch.set_rng_state(saved)


def stacked_losses(net: StackedRNN, P: dict, tokens: list[torch.Tensor], feeds: list[torch.Tensor | None],
                   rngs: list[torch.Tensor], training: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Each seed's training loss on its own batch, in one batched pass.

    tokens, feeds: per seed (B, L_k) (feeds None: teacher-forced); rngs: per seed, its CPU
    random state for dropout. Returns (losses (k,), the random states after).
    """
    dev = tokens[0].device
    L = max(t.shape[1] for t in tokens)
    tok = torch.stack([F.pad(t, (0, L - t.shape[1])) for t in tokens])
    k, B = tok.shape[:2]
    pk = _Packing((tok[:, :, 1:] != 0).sum(2), L - 1)  # inputs 0..n-1 predict the n non-pad targets
    free = feeds[0] is not None
    fd = torch.stack([F.pad(f, (0, L - f.shape[1])) for f in feeds]) if free else None
    h = net.run(P, tok[:, :, :L - 1], pk, feed=fd[:, :, :L - 1] if free else None)  # (k, S, H)
    rows = [loss_rows(t, f) for t, f in zip(tok, fd if free else [None] * k)]
    N = max(len(r) for r in rows)
    feats = torch.stack([F.pad(h[i][pk.flat(i, r)], (0, 0, 0, N - len(r))) for i, r in enumerate(rows)])
    keep, new_rngs = None, list(rngs)
    if training and net.p_drop > 0:
        masks = []
        for i, r in enumerate(rows):
            m, new_rngs[i] = _dropout_keep(len(r), P["readout.0.weight"].shape[1], net.p_drop, rngs[i])
            masks.append(F.pad(m, (0, 0, 0, N - len(r))))
        keep = torch.stack(masks).to(dev)
    logits = net.head(P, feats, keep, net.p_drop)
    tgt = tok[:, :, 1:].reshape(k, -1)
    losses = torch.stack([F.cross_entropy(logits[i, :len(r)], tgt[i][r]) for i, r in enumerate(rows)])
    return losses, new_rngs


def _seed_opt_state(opt: torch.optim.Optimizer, k: int) -> dict:
    """Seed k's slice of the stacked Adam state, as a lone run's ``opt.state_dict()``."""
    sd = opt.state_dict()
    state = {i: {key: (v[k].clone() if key.startswith("exp_avg") else v.clone()) for key, v in st.items()}
             for i, st in sd["state"].items()}
    return {"state": state, "param_groups": [dict(g) for g in sd["param_groups"]]}


def _stack_opt_states(opt: torch.optim.Optimizer, states: list[dict]) -> None:
    """Load lone runs' Adam states (one step count) into the stacked optimiser."""
    s0 = states[0]
    stacked = {i: {key: (torch.stack([s["state"][i][key] for s in states]) if key.startswith("exp_avg") else v.clone())
                   for key, v in st.items()} for i, st in s0["state"].items()}
    opt.load_state_dict({"state": stacked, "param_groups": [dict(g) for g in s0["param_groups"]]})


def _train_group(cfg0: TrainConfig, runs: list[_Run], rngs: list[torch.Tensor], dev, progress: bool) -> None:
    """Train runs that are at the same step, together, until each stops."""
    net = StackedRNN([r.model for r in runs])
    opt = torch.optim.Adam(net.parameters(), lr=cfg0.lr)
    if runs[0].opt_state is not None:
        _stack_opt_states(opt, [r.opt_state for r in runs])
    active = [i for i, r in enumerate(runs) if not r.done]
    frozen = {n: p.detach().clone() for n, p in net.params.items()}
    losses: list[list] = [[] for _ in runs]
    bar = None
    if progress and active:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg0.max_steps, initial=runs[active[0]].step, unit="step",
                   desc=f"train {len(runs)} {cfg0.arch} seeds on {cfg0.task}")
    t0 = [time.perf_counter()] * len(runs)
    free = cfg0.response_input == "free"
    try:
        while active:
            step = runs[active[0]].step
            idx = torch.tensor(active, device=dev)
            P = net.take(net.params, None if len(active) == len(runs) else idx)
            batches = [runs[i].next_batch(dev) for i in active]
            for pg in opt.param_groups:
                pg["lr"] = lr_at(step, cfg0)
            loss, new = stacked_losses(net, P, [b.tokens for b in batches],
                                       [b.task_mask if free else None for b in batches], [rngs[i] for i in active])
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            values = loss.detach().tolist()
            with torch.no_grad():  # seeds that stopped keep their weights
                stopped = [i for i in range(len(runs)) if i not in active]
                if stopped:
                    s = torch.tensor(stopped, device=dev)
                    for n, p in net.params.items():
                        p[s] = frozen[n][s]
            metrics = [None] * len(active)
            evaluated = runs[active[0]].evaluates_at(runs[active[0]].step + 1)
            if evaluated:  # every active seed is at this step: evaluate them together
                te = time.perf_counter()
                metrics = net.evaluate(net.take(net.params, None if len(active) == len(runs) else idx),
                                       [runs[i].evals for i in active])
                te = time.perf_counter() - te
                for i in active:  # evaluation time is not training time, as in a lone run
                    t0[i] += te
            for j, i in enumerate(list(active)):
                rngs[i] = new[j]
                net.copy_to(i, runs[i].model)
                done, t0[i] = runs[i].after_step(values[j], losses[i], t0[i], lambda i=i: _seed_opt_state(opt, i),
                                                 lambda i=i: rngs[i], metrics[j])
                if done:
                    active.remove(i)
                    with torch.no_grad():
                        for n, p in net.params.items():
                            frozen[n][i] = p[i]
            if bar is not None:
                bar.update(1)
                if evaluated:
                    bar.set_postfix(solving=len(active), acc=" ".join(f"{r.history[-1]['trial_acc_train']:.2f}" for r in runs))
    except KeyboardInterrupt:
        for i in active:
            runs[i].save_latest(_seed_opt_state(opt, i), rngs[i])
        raise
    finally:
        if bar is not None:
            bar.close()


def train_seeds(seeds: Sequence[int], cfg: TrainConfig | None = None, run_dirs="auto", device: str = "auto",
                progress: bool = True, overwrite: bool = False, **overrides) -> list[RunResult]:
    """Train one network per seed (all else equal), GRUs and LSTMs together as one batched network.

    cfg and keywords: the ``TrainConfig`` (its ``seed`` is replaced by each of ``seeds``).
    run_dirs: "auto" (``data/runs/<name>`` per seed), None (nothing on disk) or one folder per
    seed. Runs found finished are loaded, interrupted ones resumed (seeds at the same step
    together). Returns one ``RunResult`` per seed, in order.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    base = asdict(cfg) if cfg else {}
    cfgs = [TrainConfig(**{**base, **overrides, "seed": s}) for s in seeds]
    if run_dirs == "auto":
        dirs = [runs_dir() / c.run_name() for c in cfgs]
    elif run_dirs is None:
        dirs = [None] * len(seeds)
    else:
        dirs = [Path(d) for d in run_dirs]
        if len(dirs) != len(seeds):
            raise ValueError(f"run_dirs names {len(dirs)} folders for {len(seeds)} seeds")
    if cfgs[0].arch not in STACKABLE or len(seeds) == 1:
        return [train(c, run_dir=d, device=device, progress=progress, overwrite=overwrite) for c, d in zip(cfgs, dirs)]
    dev = resolve_device(device)
    runs, rngs = [], []
    for c, d in zip(cfgs, dirs):
        g = seed_everything(c.seed)
        model = build_model(c.model_config()).to(dev)
        model.task_name = c.task
        run = _Run(c, d, model, g, overwrite)
        run.start()
        runs.append(run)
        rngs.append(run.torch_rng if run.resuming else torch.get_rng_state())
    by_step: dict[int, list[int]] = {}
    for i, r in enumerate(runs):
        if not r.done and r.step < r.cfg.max_steps:
            by_step.setdefault(r.step, []).append(i)
    for step, members in sorted(by_step.items()):
        group_rngs = [rngs[i] for i in members]
        _train_group(cfgs[0], [runs[i] for i in members], group_rngs, dev, progress)
    out = []
    for r in runs:
        r.model.eval()
        out.append(RunResult(r.model, r.cfg, r.run_dir, r.history, _summarise(r.history, r.cfg)))
    return out

"""symlib against pyvene: one DAS search done both ways, in one process, on the same network and pairs.

pyvene (the general intervention library of Stanford NLP) intervenes on recurrent models through
time with its own step-by-step GRU (``pyvene.models.gru.modelings_gru``, the unit ``"t"``: a
hook on the GRU cell counts the cell's calls) and trains a rotation with
``RotatedSpaceIntervention`` (``BoundlessRotatedSpaceIntervention``: a learned soft boundary).
This script runs the book's search both ways:

- the same weights: the GRU (width 128, MultiObject) is symlib's; pyvene's ``GRULMHeadModel``
  gets copies of its embedding and recurrent weights (torch's gate order r, z, n is pyvene's
  reset, update, new) and the book's read-out (Linear, GELU, Dropout, Linear) as its head; the
  two networks' logits are checked to agree before anything is timed;
- the same pairs: symlib's ``make_splits`` (Up-Down count): target tokens, source tokens,
  positions and counterfactual labels; the same batches, in the same order, for both;
- the same start: pyvene's 128 x 128 rotation is set so that its first 16 columns span
  symlib's starting 16-dim subspace;
- the same loss (cross-entropy on every token after the swap, as ``das_loss``) and optimiser
  (Adam, lr 1e-3), batch 128, 16 dims, the state at one position of each row swapped and the
  recurrence run on from it.

Reported, for each library: ms per step (median and mean of the steps after ``--warmup``, and the
median of the first ``--steps`` of them) and, after ``--budget`` steps from the same start on the
same batches, the trial IIA (every task-mask token after the swap right, teacher-forced) on the
same held-out test pairs, also on the pairs whose counterfactual differs from the target's own
continuation; pyvene's learned subspace is scored by symlib's evaluator too (the two agree). pyvene
runs three ways: given the source states (``source_representations``; symlib's step is given them
too: the network is frozen), running each source through its GRU every step (its usual call; timed
only), and given the states with its rotation computed once a step (torch's
``parametrize.cached``, which pyvene's own loop does not use; timed only). The last line is
``ratio symlib/pyvene ms per step: X``: symlib's median over the whole search over pyvene's
(source states given). Unless ``--no-boundless``, the same for boundless DAS: symlib's
``BoundlessAlignment`` (its own recipe: log-boundary, nested cuts, size held for its first 300
steps) against pyvene's ``BoundlessRotatedSpaceIntervention`` with pyvene's recipe (boundary
fraction from 0.5 at lr 1e-2 with a cost of 1 per unit fraction, temperature annealed 50 -> 0.1
over the budget): the same kind of step, but two different searches, so only the speeds compare.

``--net auto`` (the default) uses the book's seed-0 GRU when data/runs holds it finished, else an
untrained GRU of the same shape (the speeds hold, the IIA means little); ``--net book`` trains the
book's GRU first when it is missing (a minute or two on a CPU).

What pyvene 0.1.8 cannot express as shipped (see benchmarks/README.md, "symlib and pyvene"):
its through-time path fails on a GRU cell's (batch, d) output (a shape error in its scatter),
and, once that is shaped, its hook intervenes at *every* step of every row, with a zero source
at the steps that are not the row's position, so it zeroes the rotated subspace there. Two
small subclasses here (``_through_time``) return the shape its scatter expects and leave a row
untouched where pyvene passes that dummy zero source; with them pyvene computes exactly the
book's intervention (checked at start against symlib's logits). Still unlike symlib: pyvene
runs each target from its first token (symlib starts from the stored state at the position and
runs only what follows, packed to each row's last scored token), its GRU is a Python loop over
time (symlib's is torch's fused GRU), its rotation is a full 128 x 128 orthogonal
parametrisation recomputed at every hook call (symlib keeps the 128 x 16 columns that matter,
computed once a step), so the two optimisers move differently parametrised rotations from the
same start. A third orthogonal row tests that this is all that differs: symlib's own step with
pyvene's parametrisation (``SquareRotation``: the full square rotation by matrix exponential, from
pyvene's start) should reach pyvene's IIA and loss after the same budget; the summary prints the
difference.

    make bench-peers                       # installs .[peers] (pyvene) into .venv, torch pinned, then runs this
    python benchmarks/bench_peers.py [--net auto|book|untrained] [--budget 300] [--steps 50] [--warmup 5]
        [--threads 2] [--device cpu] [--no-boundless] [--out out/bench_peers.json]

Offline: HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 are set before pyvene (and transformers)
load; nothing is downloaded.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse
import contextlib
import copy
import io
import json
import statistics
import time
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

import symlib
from symlib.game.counterfactuals import split_seed
from symlib.intervene.das import DASConfig, new_alignment
from symlib.intervene.iia import PairStates, after_swap, das_loss, evaluate_alignment, frozen, scored_logits
from report import write_report

D, PROGRAM, VARIABLE = 128, "up_down", "count"


# ---------------------------------------------------------------- the network, both ways

def load_network(which: str, seed: int, device: str):
    """symlib's width-128 MultiObject GRU: (model in eval mode, a line saying which one)."""
    from symlib.networks.training import TrainConfig, run_finished
    path = symlib.runs_dir() / TrainConfig(task="multiobject", arch="gru", seed=seed).run_name()
    if which == "auto":
        which = "book" if run_finished(path) else "untrained"
    if which == "book":
        net = symlib.load_or_train("multiobject", "gru", seed, device=device, progress=False).model
        what = f"the book's trained GRU ({path.name})"
    else:
        torch.manual_seed(seed)
        net = symlib.make_model("gru", vocab_size=symlib.make_task("multiobject").vocab_size, d_model=D).to(device)
        what = f"an untrained GRU (seed {seed}): speed only, its IIA means little"
    return net.eval(), what


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed as a package"


def import_pyvene():
    """Import pyvene quietly (it prints about optional back-ends) and offline."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            import pyvene
            from pyvene.models.gru.modelings_gru import GRUConfig, GRULMHeadModel
    except ImportError as e:
        raise SystemExit(f"pyvene is not installed ({e}); `make bench-peers` installs it (pip install -e '.[peers]')")
    return pyvene, GRUConfig, GRULMHeadModel


def pyvene_gru(net, GRUConfig, GRULMHeadModel):
    """pyvene's own GRU language model holding copies of ``net``'s weights and read-out."""
    rnn = net.rnn
    cfg = GRUConfig(include_emb=True, vocab_size=net.config.vocab_size, n_layer=1, h_dim=D,
                    n_labels=net.config.vocab_size, pdrop=0.0)
    m = GRULMHeadModel(cfg)
    with torch.no_grad():
        m.gru.wte.weight.copy_(net.embed.weight)
        cell = m.gru.cells[0]
        cell.x2h.weight.copy_(rnn.weight_ih_l0)
        cell.x2h.bias.copy_(rnn.bias_ih_l0)
        cell.h2h.weight.copy_(rnn.weight_hh_l0)
        cell.h2h.bias.copy_(rnn.bias_hh_l0)
    m.lm_head = copy.deepcopy(net.readout)  # the book's head (Linear, GELU, Dropout, Linear) for pyvene's Linear
    for p in m.parameters():
        p.requires_grad_(False)
    return m.to(net.device).eval()


def _through_time(base_cls):
    """A subclass of a pyvene intervention that its stateful (through-time) GRU path can run.

    pyvene calls the intervention at every step of the recurrence for every row: with the
    source state where the step is the row's position, with zeros elsewhere. Where the source
    row is that zero placeholder, the base is returned unchanged (a GRU state is never exactly
    zero), and the output gets the (batch, 1, d) shape pyvene's scatter for unit "t" indexes.
    """
    class ThroughTime(base_cls):
        def forward(self, base, source, subspaces=None, **kw):
            out = super().forward(base, source, subspaces, **kw)
            hit = (source != 0).any(-1, keepdim=True)
            return torch.where(hit, out, base)[:, None, :]
    ThroughTime.__name__ = f"ThroughTime{base_cls.__name__}"
    return ThroughTime


def full_rotation(Q: torch.Tensor, seed: int) -> torch.Tensor:
    """A d x d orthogonal matrix whose first k columns span the columns of Q (d x k)."""
    g = torch.Generator().manual_seed(seed)
    rest = torch.randn(Q.shape[0], Q.shape[0] - Q.shape[1], generator=g, dtype=Q.dtype)
    R, _ = torch.linalg.qr(torch.cat([Q.cpu(), rest], 1))
    return R


class SquareRotation(nn.Module):
    """pyvene's parametrisation in symlib's search: a full d x d rotation under torch's orthogonal
    parametrisation (the matrix exponential, as for any square matrix), started from pyvene's start,
    its first k columns the aligned subspace. symlib's own keeps only d x k (Householder reflections).
    Same subspace at the start, same loss and optimiser: what differs from symlib's row is the
    parametrisation alone, and what differs from pyvene's is pyvene's machinery alone."""

    kind = "orthogonal"

    def __init__(self, start: torch.Tensor, k: int):
        super().__init__()
        self.k = k
        lin = nn.Linear(start.shape[0], start.shape[0], bias=False)
        self.lin = nn.utils.parametrizations.orthogonal(lin)
        self.lin.weight = start  # right_inverse: the trivialisation's base becomes ``start``

    def interchange(self, h_t, h_s, swap, source=None):
        Q = self.lin.weight[:, : self.k]
        zt, zs = h_t.float() @ Q, h_s.float() @ Q
        return (h_t.float() + (zs - zt) @ Q.T).to(h_t.dtype)

    def penalty(self):
        return torch.zeros(())

    def on_step(self, step):
        pass

    def progress(self):
        return {}


class Subspace(nn.Module):
    """A fixed aligned subspace Q (d x k) in symlib's interchange form, to score another library's result."""

    def __init__(self, Q: torch.Tensor):
        super().__init__()
        self.register_buffer("Q", Q.detach().clone())

    def interchange(self, h_t, h_s, swap, source=None):
        Q = self.Q
        return (h_t.float() + (swap.float()[:, :1] * ((h_s.float() - h_t.float()) @ Q)) @ Q.T).to(h_t.dtype)


# ---------------------------------------------------------------- one step, each library

class SymlibSearch:
    """symlib's DAS step, as its search engine takes it: the stored states, ``scored_logits``
    (the swap, then the packed continuation from it), ``das_loss``, Adam; rotations computed once a step."""

    label = "symlib"

    def __init__(self, net, align, states: PairStates, lr: float):
        self.net, self.align, self.states = net, align.to(net.device), states
        groups = align.param_groups(lr) if hasattr(align, "param_groups") else [{"params": list(align.parameters()), "lr": lr}]
        self.opt = torch.optim.Adam(groups)
        self.step_no = 0

    def step(self, idx):
        a, dev = self.align, self.net.device
        a.train()
        a.on_step(self.step_no)
        tokens, mask, pos, ht, hs, swap = self.states.batch(idx, dev)
        with parametrize.cached():
            logits, tgt, on_mask, _ = scored_logits(self.net, a, tokens, mask, pos, ht, hs, swap, "state")
            loss = das_loss(logits, tgt, on_mask) + a.penalty()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step_no += 1
        return float(loss.detach())

    def evaluate(self, test: PairStates) -> dict:
        ev = evaluate_alignment(self.net, self.align, test, "state", free_running=False)
        return {"iia": ev["iia"], "iia_changed": ev["iia_changed"], "n_units": self.align.progress().get("n_units", None)}


class PyveneSearch:
    """pyvene's DAS step: ``IntervenableModel`` on its GRU, unit "t" at layer 0's cell output,
    the target's tokens as base, the source's state (given, or from a run of the source's tokens),
    the same loss on its logits, Adam."""

    def __init__(self, pv, pvm, intervention, states: PairStates, lr: float, sources: str, boundary_lr: float = 1e-2,
                 budget: int = 300, cached: bool = False):
        self.pv, self.pvm, self.iv, self.states, self.sources = pv, pvm, intervention, states, sources
        self.cached = cached
        self.ivm = pv.IntervenableModel({"layer": 0, "component": "cell_output", "unit": "t", "intervention": intervention},
                                        model=pvm)
        self.ivm.disable_model_gradients()
        self.ivm.set_device(pvm.device)
        self.boundless = hasattr(intervention, "intervention_boundaries")
        groups = [{"params": list(intervention.rotate_layer.parameters()), "lr": lr}]
        if self.boundless:  # pyvene's recipe for boundless DAS: its own rate for the boundary, the temperature annealed
            intervention.temperature.requires_grad_(False)
            groups.append({"params": [intervention.intervention_boundaries], "lr": boundary_lr})
            self.temps = torch.linspace(50.0, 0.1, max(budget, 2))
        self.opt = torch.optim.Adam(groups)
        self.label = (f"pyvene ({'source states given' if sources == 'given' else 'sources run each step'}"
                      f"{', rotation cached a step' if cached else ''})")
        self.step_no = 0

    def _forward(self, idx, dev, states: PairStates | None = None):
        states = self.states if states is None else states
        p = states.pairs
        tokens, mask, pos, ht, hs, swap = states.batch(idx, dev)
        B = tokens.shape[0]
        base_locs = [[int(t)] for t in pos.tolist()]
        if self.sources == "given":
            src_locs = [[0] for _ in range(B)]
            _, out = self.ivm({"input_ids": tokens}, unit_locations={"sources->base": ([src_locs], [base_locs])},
                              source_representations=[[(hs, [True] * B)]])
        else:
            src = p.src_tokens[idx]
            src = src[:, : int(((src != 0).long() * torch.arange(1, src.shape[1] + 1)).max())].to(dev)
            src_locs = [[int(s)] for s in p.src_pos[idx].tolist()]
            _, out = self.ivm({"input_ids": tokens}, [{"input_ids": src}],
                              unit_locations={"sources->base": ([src_locs], [base_locs])})
        logits = out[0]
        sel = after_swap(tokens, pos)
        nxt = F.pad(tokens[:, 1:], (0, 1))
        on_mask = F.pad(mask[:, 1:], (0, 1))
        return logits, sel, nxt, on_mask

    def step(self, idx):
        dev = self.pvm.device
        if self.boundless:
            self.iv.set_temperature(self.temps[min(self.step_no, len(self.temps) - 1)].to(dev))
        # pyvene recomputes its orthogonal parametrisation at each of its ~3 uses per hook call, and the
        # hook runs at every step of the recurrence; ``cached`` (torch's parametrize.cached) computes it once
        with parametrize.cached() if self.cached else contextlib.nullcontext():
            logits, sel, nxt, _ = self._forward(idx, dev)
        loss = F.cross_entropy(logits[sel], nxt[sel])
        if self.boundless:
            loss = loss + self.iv.intervention_boundaries.sum()  # pyvene's tutorial's size cost
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step_no += 1
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, test: PairStates, net) -> dict:
        dev = self.pvm.device
        correct = []
        for i in range(0, len(test), 500):
            idx = torch.arange(i, min(i + 500, len(test)))
            logits, sel, nxt, on_mask = self._forward(idx, dev, test)
            wrong = (logits.argmax(-1) != nxt) & on_mask & sel
            correct.append(~wrong.any(1).cpu())
        correct = torch.cat(correct)
        changed = test.pairs.changed.bool()
        out = {"iia": float(correct.float().mean()), "iia_changed": float(correct[changed].float().mean())}
        if not self.boundless:  # the same subspace through symlib's own evaluator
            Q = self.iv.rotate_layer.weight[:, : int(self.iv.interchange_dim)].detach()
            out["iia_by_symlib"] = evaluate_alignment(net, Subspace(Q).to(dev), test, "state", free_running=False)["iia"]
        else:
            out["boundary_dims"] = round(float(self.iv.intervention_boundaries.clamp(1e-3, 1)) * D, 2)
        return out


def run(search, batches, warmup: int, first: int, device) -> dict:
    """Train on ``batches``: ms per step after ``warmup`` (median and mean over all of them, and the
    median over the ``first`` after the warm-up), and the last loss.

    Both figures matter for pyvene: its rotation is a matrix exponential whose cost grows as the
    rotation moves from its start (more squarings), so its later steps are slower than its first.
    """
    times, loss = [], None
    for i, idx in enumerate(batches):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = search.step(idx)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - t0))
    r2 = lambda x: round(x, 2)
    return {"ms_median": r2(statistics.median(times)) if times else None, "ms_mean": r2(statistics.fmean(times)) if times else None,
            "ms_median_first": r2(statistics.median(times[:first])) if times else None,
            "timed_steps": len(times), "steps": len(batches), "last_loss": round(loss, 4) if loss is not None else None}


@torch.no_grad()
def check_same_network(net, pvm, pv, states: PairStates, k: int) -> dict:
    """Natural logits, and logits after one swap through a random 16-dim subspace: symlib's against pyvene's."""
    dev = net.device
    idx = torch.arange(min(64, len(states)))
    tokens, mask, pos, ht, hs, swap = states.batch(idx, dev)
    natural = (net(tokens) - pvm(input_ids=tokens)[0]).abs().max().item()
    iv = _through_time(pv.RotatedSpaceIntervention)(embed_dim=D)
    iv.set_interchange_dim(k)
    probe = PyveneSearch(pv, pvm, iv, states, 1e-3, "given")
    logits, sel, _, _ = probe._forward(idx, dev)
    Q = iv.rotate_layer.weight[:, :k]
    ref = net.run_with_state(tokens, "state", pos, ht + ((hs - ht) @ Q) @ Q.T, select=sel)
    swapped = (logits[sel] - ref).abs().max().item()
    if natural > 1e-3 or swapped > 1e-3:
        raise SystemExit(f"pyvene's GRU does not compute symlib's network: logits differ by {natural:.2e} (natural) "
                         f"and {swapped:.2e} (after the swap)")
    return {"natural_logits_max_diff": natural, "swapped_logits_max_diff": swapped}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--net", choices=("auto", "book", "untrained"), default="auto",
                    help="auto: the book's seed-0 GRU when data/runs holds it, else untrained; book: train it first if missing")
    ap.add_argument("--budget", type=int, default=300, help="training steps before IIA is measured (both libraries)")
    ap.add_argument("--steps", type=int, default=50, help="timed steps of the variants that are only timed")
    ap.add_argument("--warmup", type=int, default=5, help="steps left out of every timing")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--n-units", type=int, default=16)
    ap.add_argument("--n-train", type=int, default=10_000)
    ap.add_argument("--n-test", type=int, default=1_000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-boundless", action="store_true", help="skip the boundless comparison")
    ap.add_argument("--out", default=str(symlib.REPO_ROOT / "out" / "bench_peers.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    pv, GRUConfig, GRULMHeadModel = import_pyvene()
    task = symlib.make_task("multiobject")
    net, what = load_network(a.net, a.seed, a.device)
    for p in net.parameters():
        p.requires_grad_(False)
    pvm = pyvene_gru(net, GRUConfig, GRULMHeadModel)
    cfg = DASConfig(program=PROGRAM, variable=VARIABLE, n_units=a.n_units, seed=a.seed, lr=a.lr, batch_size=a.batch,
                    n_train=a.n_train, n_test=a.n_test)
    pairs = symlib.make_splits(task, PROGRAM, VARIABLE, a.seed, a.n_train, 1, a.n_test)
    with frozen(net):
        train, test = (PairStates.compute(net, pairs[s], "state") for s in ("train", "test"))
    check = check_same_network(net, pvm, pv, train, a.n_units)
    print(f"network: {what}; pyvene's copy agrees: {json.dumps(check)}", flush=True)
    g = torch.Generator().manual_seed(split_seed(a.seed, "batches"))
    n_batches = max(a.budget, a.steps + a.warmup)
    batches = [torch.randint(len(train), (a.batch,), generator=g) for _ in range(n_batches)]

    def symlib_search(kind):
        return SymlibSearch(net, new_alignment(replace(cfg, alignment=kind), D), train, a.lr)

    def symlib_square_search():  # symlib's step with pyvene's parametrisation and start
        search = SymlibSearch(net, SquareRotation(full_rotation(new_alignment(cfg, D).Q.detach(), a.seed), a.n_units),
                              train, a.lr)
        search.label = "symlib with pyvene's rotation (full square, matrix exponential)"
        return search

    def pyvene_search(kind, sources, budget, cached=False):
        if kind == "orthogonal":
            iv = _through_time(pv.RotatedSpaceIntervention)(embed_dim=D)
            iv.set_interchange_dim(a.n_units)
            start = new_alignment(cfg, D).Q.detach()  # symlib's starting subspace
            iv.rotate_layer.weight = full_rotation(start, a.seed)
        else:  # pyvene draws its own starting rotation and boundary: seeded, so that a rerun repeats it
            torch.manual_seed(split_seed(a.seed, "pyvene boundless"))
            iv = _through_time(pv.BoundlessRotatedSpaceIntervention)(embed_dim=D)
        return PyveneSearch(pv, pvm, iv.to(dev), train, a.lr, sources, budget=budget, cached=cached)

    rows = []

    def record(search, kind, steps, evaluate):
        r = {"library": search.label, "alignment": kind,
             **run(search, batches[:steps], min(a.warmup, steps - 1), a.steps, dev)}
        if evaluate:
            r.update(search.evaluate(test) if isinstance(search, SymlibSearch) else search.evaluate(test, net))
        rows.append(r)
        print(json.dumps(r), flush=True)
        return r

    with frozen(net):
        s_orth = record(symlib_search("orthogonal"), "orthogonal", a.budget, True)
        p_orth = record(pyvene_search("orthogonal", "given", a.budget), "orthogonal", a.budget, True)
        s_square = record(symlib_square_search(), "orthogonal", a.budget, True)
        short = a.steps + a.warmup
        p_src = record(pyvene_search("orthogonal", "run", short), "orthogonal", short, False)
        p_cached = record(pyvene_search("orthogonal", "given", short, cached=True), "orthogonal", short, False)
        if not a.no_boundless:
            s_bound = record(symlib_search("boundless"), "boundless", a.budget, True)
            p_bound = record(pyvene_search("boundless", "given", a.budget), "boundless", a.budget, True)
    ratio = s_orth["ms_median"] / p_orth["ms_median"]
    lines = []  # what the run concludes, printed and saved as the JSON's summary (the README's speed block)
    for r in rows:
        if "iia" in r:
            extra = (f", pyvene's subspace by symlib's evaluator {r['iia_by_symlib']:.3f}" if "iia_by_symlib" in r else "")
            size = (f", size {r.get('n_units') or r.get('boundary_dims')} dims" if r["alignment"] == "boundless" else "")
            lines.append(f"- {r['library']}, {r['alignment']}: test IIA after {r['steps']} steps {r['iia']:.3f} "
                         f"(changed pairs {r['iia_changed']:.3f}){extra}{size}")
    lines.append(f"- ms per step, median of the first {a.steps} after {a.warmup} warm-up steps: symlib {s_orth['ms_median_first']}; "
                 f"pyvene with the source states given {p_orth['ms_median_first']}, running the sources each step "
                 f"{p_src['ms_median_first']}, with the source states given and its rotation computed once a step "
                 f"(torch's parametrize.cached) {p_cached['ms_median_first']}")
    lines.append(f"- ms per step over the whole {a.budget}-step search (median): symlib {s_orth['ms_median']}, "
                 f"pyvene {p_orth['ms_median']} ({a.threads} torch thread(s), {a.device})")
    lines.append(f"- the same parametrisation in both (symlib with pyvene's rotation against pyvene): test IIA differs by "
                 f"{abs(s_square['iia'] - p_orth['iia']):.3f} (changed pairs {abs(s_square['iia_changed'] - p_orth['iia_changed']):.3f}), "
                 f"last loss {s_square['last_loss']} against {p_orth['last_loss']}; ms per step (median) "
                 f"{s_square['ms_median']} against {p_orth['ms_median']}")
    if not a.no_boundless:
        lines.append(f"- boundless, ms per step over the whole {a.budget}-step search (median): symlib {s_bound['ms_median']}, "
                     f"pyvene {p_bound['ms_median']}")
    lines.append(f"- ratio symlib/pyvene ms per step: {ratio:.3f}")
    write_report(a.out, a.threads, a.device, rows, [
        ("library", "{r[library]}"), ("alignment", "{r[alignment]}"),
        ("ms / step (median, mean)", "{r[ms_median]}, {r[ms_mean]}"),
        (f"median of the first {a.steps} timed", "{r[ms_median_first]}"), ("steps", "{r[steps]}")],
        network=what, pairs={"train": a.n_train, "test": a.n_test}, batch=a.batch, n_units=a.n_units,
        same_network_check=check, ratio_symlib_over_pyvene=round(ratio, 4), pyvene=_version("pyvene"), summary=lines)
    print("\n".join(line[2:] for line in lines))


if __name__ == "__main__":
    main()

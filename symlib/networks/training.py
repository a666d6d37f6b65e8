"""Train a network on a counting task: the original recipe, an explicit stopping rule,
dense-then-sparse checkpoints, resumable runs.

A run lives in one folder (``data/runs/<name>/``), named after its whole recipe
(``TrainConfig.run_name``: ``<task>-<arch>-d<width>-s<seed>`` for the book's recipe, with a
short hash of the fields that differ from it appended otherwise)::

    config.json        the TrainConfig that made it
    metrics.json       one record per evaluation
    latest.pt          everything needed to resume (model, optimiser, RNG, data order)
    ckpt/step_000100.pt   model weights on the checkpoint schedule (for learning dynamics)

Checkpoints hold only tensors and plain values and are loaded with
``torch.load(weights_only=True)``, so loading one cannot run arbitrary code.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from ..paths import runs_dir
from ..utils import atomic_torch_save, atomic_write_json, check_choice, finish_bar, resolve_device, seed_everything
from ..game.tasks import COUNT_SETS, TASK_NAMES, Task, Trials, make_task
from .models import ARCH_NAMES, ModelConfig, SequenceModel, build_model

CHECKPOINT_FORMAT = "symlib-checkpoint/1"
RESPONSE_INPUTS = ("free", "teacher")


def is_checkpoint_step(step: int) -> bool:
    """Dense early, sparse later: every 25 steps to 200, 50 to 1000, 250 to 5000, then 1000."""
    if step <= 200:
        return step % 25 == 0
    if step <= 1000:
        return step % 50 == 0
    if step <= 5000:
        return step % 250 == 0
    return step % 1000 == 0


#: What each number of a ``TrainConfig`` may be, checked before anything is trained or written.
_INT_RULES = {  # name -> (smallest allowed, what the number is)
    "d_model": (1, "the width of the network's state"),
    "batch_size": (1, "trials per training step"),
    "n_train_trials": (1, "trials in the fixed training set"),
    "warmup_steps": (1, "steps of linear warm-up; the decay lr*(warmup/step)^0.25 is 0 without one"),
    "max_steps": (1, "the step cap; None: the book's, 3000 for RNNs and 1000 for Transformers"),
    "eval_every": (1, "steps between evaluations"),
    "n_eval_trials": (1, "trials per evaluation set"),
    "patience": (0, "evaluations in a row at solve_threshold or above before training stops; 0: never stop early"),
}
_FLOAT_RULES = {  # name -> (low, low allowed, high or None, high allowed, what the number is)
    "dropout": (0.0, True, 1.0, False, "the dropout rate"),
    "unk_p": (0.0, True, 1.0, False, "the void-token rate; None: the original's, 0.2 for Transformers and 0 for RNNs"),
    "lr": (0.0, False, None, False, "Adam's peak learning rate"),
    "solve_threshold": (0.0, False, 1.0, True, "the trial accuracy on training counts that counts as solved"),
}
#: The fields a run's name spells out; every other field enters it as a hash when it differs from the book's.
_NAMED_FIELDS = ("task", "arch", "d_model", "seed")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(name: str, value) -> int:
    """``value`` as an int, or a ValueError naming the field, the value and what is allowed."""
    low, what = _INT_RULES[name]
    if not _is_number(value) or value != int(value) or value < low:
        raise ValueError(f"{name}={value!r} is not allowed: it must be a whole number >= {low} ({what})")
    return int(value)


def _check_float(name: str, value) -> float:
    """``value`` as a float, or a ValueError naming the field, the value and what is allowed."""
    low, low_in, high, high_in, what = _FLOAT_RULES[name]
    ok = _is_number(value) and (value >= low if low_in else value > low)
    if high is not None:
        span = f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
        ok = ok and (value <= high if high_in else value < high)
    else:
        span = f"{'>=' if low_in else '>'} {low:g}"
    if not ok:
        raise ValueError(f"{name}={value!r} is not allowed: it must be a number {span} ({what})")
    return float(value)


@dataclass
class TrainConfig:
    """Everything that defines a training run: the book's recipe by default (the original's,
    docs/science.md, with the Transformer capped at 1000 steps). Every field is part of a
    run's identity (``run_name``)."""

    task: str = "multiobject"
    arch: str = "gru"
    d_model: int = 128
    seed: int = 0
    dropout: float = 0.5
    unk_p: Optional[float] = None  # void-token rate; None: 0.2 for Transformers, 0 for RNNs (original)
    response_input: Optional[str] = None  # "free" or "teacher"; None: free for RNNs, teacher for Transformers
    lr: float = 5e-4
    batch_size: int = 128
    n_train_trials: int = 1000  # one fixed training set, reshuffled each epoch
    warmup_steps: int = 100
    max_steps: Optional[int] = None  # None: the book's cap, 3000 for RNNs and 1000 for Transformers
    eval_every: int = 25
    n_eval_trials: int = 500
    solve_threshold: float = 0.99
    patience: int = 8  # evaluations at or above the threshold (training counts) before stopping; 0: never stop early

    def __post_init__(self):
        check_choice("task", self.task, TASK_NAMES)
        check_choice("architecture", self.arch, ARCH_NAMES)
        is_tf = self.arch.startswith("transformer")
        if self.unk_p is None:
            self.unk_p = 0.2 if is_tf else 0.0
        if self.response_input is None:
            self.response_input = "teacher" if is_tf else "free"
        if self.max_steps is None:
            self.max_steps = 1000 if is_tf else 3000
        check_choice("response_input", self.response_input, RESPONSE_INPUTS)
        if not _is_number(self.seed) or self.seed != int(self.seed):
            raise ValueError(f"seed={self.seed!r} is not allowed: it must be a whole number")
        self.seed = int(self.seed)
        for name in _INT_RULES:  # whole numbers kept as int and floats as float: one recipe, one name
            setattr(self, name, _check_int(name, getattr(self, name)))
        for name in _FLOAT_RULES:
            setattr(self, name, _check_float(name, getattr(self, name)))
        self.model_config()  # raises if the width does not fit the architecture
        make_task(self.task, self.unk_p)

    def model_config(self) -> ModelConfig:
        return ModelConfig(arch=self.arch, vocab_size=make_task(self.task).vocab_size, d_model=self.d_model, dropout=self.dropout)

    def make_task(self) -> Task:
        return make_task(self.task, self.unk_p)

    def changes(self) -> dict:
        """The fields that differ from the book's recipe for this task, architecture, width and seed."""
        book = asdict(TrainConfig(**{k: getattr(self, k) for k in _NAMED_FIELDS}))
        return {k: v for k, v in asdict(self).items() if k not in _NAMED_FIELDS and v != book[k]}

    def run_name(self) -> str:
        """``<task>-<arch>-d<width>-s<seed>`` for the book's recipe; any other recipe appends a short
        hash of the fields that differ (``changes``), so two recipes never share a run folder."""
        name = f"{self.task}-{self.arch}-d{self.d_model}-s{self.seed}"
        changes = self.changes()
        if not changes:
            return name
        digest = hashlib.sha1(json.dumps(changes, sort_keys=True).encode()).hexdigest()[:8]
        return f"{name}-{digest}"

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up for ``warmup_steps``, then lr * (warmup/step)^0.25 (the original schedule)."""
    s = step + 1
    if s <= cfg.warmup_steps:
        return cfg.lr * s / cfg.warmup_steps
    return cfg.lr * (cfg.warmup_steps / s) ** 0.25


def sequence_loss(logits: torch.Tensor, tokens: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """Cross-entropy of next-token predictions over all non-pad targets: logits (B, L, V), tokens (B, L)."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=pad)


def training_loss(model: SequenceModel, inputs: torch.Tensor, targets: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """``sequence_loss`` of ``model(inputs)`` against ``targets``, computed on non-pad targets only.

    Same value as ``sequence_loss``; a batch is roughly half padding, so this saves about
    half the read-out work (and, for RNNs, a quarter of the recurrence).
    """
    logits, tgt = model.nonpad_logits(inputs, targets, pad)
    return F.cross_entropy(logits, tgt)


def free_running_loss(model: SequenceModel, tokens: torch.Tensor, feed: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """Training loss when the network is fed its own (dropout-free) predictions at ``feed``.

    Uses the model's fused version when it has one (RNNs), else a free run then ``training_loss``.
    """
    if hasattr(model, "free_running_loss"):
        return model.free_running_loss(tokens, feed, pad)
    was = model.training
    model.eval()
    inp = model.free_run_tokens(tokens, feed)
    model.train(was)
    return training_loss(model, inp, tokens, pad)


@torch.no_grad()
def trial_accuracy(logits: torch.Tensor, tokens: torch.Tensor, task_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per trial: (every task-mask token right, fraction right): logits (B, L, V), tokens/task_mask (B, L).

    Teacher-forced trial accuracy equals free-running trial accuracy: both fail at the
    same first wrong token.
    """
    pred = logits[:, :-1].argmax(-1)
    g = task_mask[:, 1:]
    ok = (pred == tokens[:, 1:]) | ~g
    n = g.sum(1).clamp(min=1)
    return ok.all(1), ((pred == tokens[:, 1:]) & g).sum(1) / n


@torch.no_grad()
def evaluate(model: SequenceModel, trials: Trials, batch_size: int = 1000) -> dict[str, float]:
    """Loss, token accuracy and trial accuracy of ``model`` on ``trials`` (eval mode)."""
    was = model.training
    model.eval()
    dev = model.device
    tot_loss, trial_ok, tok_ok, tok_n = 0.0, 0, 0.0, 0
    for i in range(0, len(trials), batch_size):
        b = trials[i:i + batch_size].to(dev)
        logits = model(b.tokens)
        tot_loss += float(sequence_loss(logits, b.tokens)) * len(b)
        ok, _ = trial_accuracy(logits, b.tokens, b.task_mask)
        pred = logits[:, :-1].argmax(-1)
        g = b.task_mask[:, 1:]
        tok_ok += float(((pred == b.tokens[:, 1:]) & g).sum())
        tok_n += int(g.sum())
        trial_ok += int(ok.sum())
    model.train(was)
    return {"loss": tot_loss / len(trials), "token_acc": tok_ok / max(tok_n, 1), "trial_acc": trial_ok / len(trials)}


def eval_sets(task: Task, n: int, seed: int) -> dict[str, Trials]:
    """Fixed evaluation trials (no void tokens) on training, held-out and out-of-range counts."""
    g = torch.Generator().manual_seed(10_000 + seed)
    return {name: task.sample(n, COUNT_SETS[name], g, unk_p=0.0) for name in ("train", "heldout", "out_of_range")}


@dataclass
class RunResult:
    """What ``train`` returns: the trained model, its evaluation history and a summary."""

    model: SequenceModel
    config: TrainConfig
    run_dir: Optional[Path]
    history: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def _summarise(history: list, cfg: TrainConfig) -> dict:
    last = history[-1] if history else {}
    solved = next((r for r in history if r["trial_acc_train"] >= cfg.solve_threshold and r["trial_acc_heldout"] >= cfg.solve_threshold), None)
    best = max(reversed(history), key=lambda r: r["trial_acc_train"]) if history else {}
    return {
        "steps": last.get("step", 0),
        "seconds": last.get("seconds", 0.0),
        "trial_acc_train": last.get("trial_acc_train"),
        "trial_acc_heldout": last.get("trial_acc_heldout"),
        "trial_acc_out_of_range": last.get("trial_acc_out_of_range"),
        "token_acc_train": last.get("token_acc_train"),
        "steps_to_solve": solved["step"] if solved else None,
        "seconds_to_solve": solved["seconds"] if solved else None,
        "stopped_because": last.get("stopped_because"),
        "best_step": best.get("step"),
        "best_trial_acc_train": best.get("trial_acc_train"),
        "best_trial_acc_heldout": best.get("trial_acc_heldout"),
    }


#: Significant digits of the floats in ``metrics.json`` (``config.json`` and ``latest.pt`` are exact).
_METRICS_DIGITS = 6


def _solved_reason(cfg: TrainConfig) -> str:
    return f"solved: trial accuracy on training counts >= {cfg.solve_threshold} for {cfg.patience} evaluations"


def _max_steps_reason(cfg: TrainConfig) -> str:
    return f"max_steps={cfg.max_steps} reached"


def _solved_by_rule(history: list, cfg: TrainConfig, digits: int | None = None) -> bool:
    """Whether ``history`` ends the way ``cfg``'s solve rule stops a run: a record saying it stopped
    solved, within ``max_steps``, its last ``patience`` evaluations (``patience`` >= 1; the step-0
    record does not count) all at ``solve_threshold`` or above. ``digits``: the history's floats
    are rounded to that many significant digits (``metrics.json``)."""
    if not history or not str(history[-1].get("stopped_because") or "").startswith("solved"):
        return False
    evals = history[1:]
    thr = cfg.solve_threshold if digits is None else float(f"{cfg.solve_threshold:.{digits}g}")
    return (cfg.patience >= 1 and history[-1]["step"] <= cfg.max_steps and len(evals) >= cfg.patience
            and all(r["trial_acc_train"] >= thr for r in evals[-cfg.patience:]))


def _ended_by_rule(history: list, cfg: TrainConfig, digits: int | None = None) -> bool:
    """Whether ``history`` ends by ``cfg``'s own rule: solved (``_solved_by_rule``) or stopped at
    exactly its ``max_steps``. A run interrupted, or stopped under another patience or step cap
    than ``cfg``'s (a "solved" after fewer evaluations, a "max_steps reached" at another step), does not."""
    if _solved_by_rule(history, cfg, digits):
        return True
    return (bool(history) and str(history[-1].get("stopped_because") or "").startswith("max_steps")
            and history[-1]["step"] == cfg.max_steps)


def _recipe_differences(there: dict, cfg: TrainConfig, ignore: tuple = ()) -> dict[str, tuple]:
    """field -> (value in the saved config ``there``, value in ``cfg``), for every field that differs."""
    return {k: (there.get(k), v) for k, v in asdict(cfg).items() if k not in ignore and there.get(k) != v}


def _other_recipe(path: Path, there: dict, differ: dict) -> str:
    """What a run folder holding another recipe's run holds, against what was asked, and where that
    run belongs: the start of the message that refuses it."""
    pairs = "; ".join(f"{k}={a!r} there, {k}={b!r} asked" for k, (a, b) in sorted(differ.items()))
    try:
        home = TrainConfig.from_dict(there).run_name()
    except (ValueError, TypeError):
        return f"{path} holds a run of another recipe ({pairs}), one this version does not accept"
    where = f", whose own folder is {path.parent / home}" if home != path.name else ""
    return f"{path} holds a run of another recipe ({pairs}){where}"


def check_same_recipe(path: Path, cfg: TrainConfig) -> None:
    """Raise a ValueError when the run folder ``path`` holds a run of another recipe than ``cfg``
    (every field compared), so it is never taken for ``cfg``'s run."""
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        return
    there = json.loads(cfg_path.read_text())
    differ = _recipe_differences(there, cfg)
    if differ:
        raise ValueError(f"{_other_recipe(path, there, differ)}. A run folder answers only for the recipe that trained "
                         "it: move that run (to its own folder) or delete it, then ask again, and the recipe asked for "
                         "trains there")


def _config_from(where, d: dict) -> TrainConfig:
    """``TrainConfig.from_dict(d)``; a config this version refuses (a negative patience, say) names ``where``."""
    try:
        return TrainConfig.from_dict(d)
    except ValueError as e:
        raise ValueError(f"{where} holds a run whose config is not allowed ({e}); delete it and train it again") from None


def _prepare_run_dir(run_dir: Path, cfg: TrainConfig, overwrite: bool) -> dict | None:
    """Make ``run_dir`` ready; return the saved state (``latest.pt``) when there is a run to resume.

    A saved run of another recipe is refused, except a smaller ``max_steps``: a run that ran out
    of steps goes on when ``max_steps`` grew (the same run, the first steps being those of the
    shorter one). One trained past the new ``max_steps`` is refused: it cannot be cut back."""
    cfg_path = run_dir / "config.json"
    if run_dir.exists() and overwrite:
        shutil.rmtree(run_dir)
    state = None
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        differ = _recipe_differences(old, cfg, ignore=("max_steps",))
        if differ:
            raise ValueError(f"{_other_recipe(run_dir, old, differ)}: choose another run_dir, move or delete that run, "
                             "or pass overwrite=True")
        if (run_dir / "latest.pt").exists():
            state = torch.load(run_dir / "latest.pt", weights_only=True, map_location="cpu")
            if state["step"] > cfg.max_steps:
                raise ValueError(
                    f"{run_dir} holds a run trained to step {state['step']}, past max_steps={cfg.max_steps} asked now "
                    f"(max_steps={old.get('max_steps')!r} there): a run cannot be cut back; choose another run_dir, "
                    "move or delete that run, or pass overwrite=True")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg_path, asdict(cfg), digits=None)  # exact: a resumed run is compared with it
    return state


class _Run:
    """One run's state and files: what ``train`` keeps per network (and ``batched.train_seeds``
    per seed), so both write the same run folder and either can resume it."""

    def __init__(self, cfg: TrainConfig, run_dir: Path | None, model: SequenceModel, g: torch.Generator,
                 overwrite: bool = False):
        self.cfg, self.run_dir, self.model, self.g = cfg, run_dir, model, g
        task = cfg.make_task()
        self.train_set = task.sample(cfg.n_train_trials, COUNT_SETS["train"], g)
        self.evals = eval_sets(task, cfg.n_eval_trials, cfg.seed)
        self.history: list[dict] = []
        self.step, self.perm, self.cursor, self.secs, self.streak = 0, torch.randperm(cfg.n_train_trials, generator=g), 0, 0.0, 0
        self.opt_state: dict | None = None  # from latest.pt when resuming
        self.torch_rng: torch.Tensor | None = None
        st = _prepare_run_dir(run_dir, cfg, overwrite) if run_dir is not None else None
        self.resuming = st is not None
        if self.resuming:
            model.load_state_dict(st["state_dict"])
            self.opt_state, self.torch_rng = st["optimizer"], st["torch_rng"]
            g.set_state(st["data_rng"])
            self.step, self.perm, self.cursor, self.secs, self.streak = st["step"], st["perm"], st["cursor"], st["seconds"], st["streak"]
            self.history = json.loads(st["history"])

    @property
    def done(self) -> bool:
        """Solved and stopped by this config's rule (a run that only ran out of steps goes on if max_steps grew)."""
        return _solved_by_rule(self.history, self.cfg)

    def next_batch(self, dev) -> Trials:
        cfg = self.cfg
        if self.cursor >= cfg.n_train_trials:
            self.perm, self.cursor = torch.randperm(cfg.n_train_trials, generator=self.g), 0
        b = self.train_set[self.perm[self.cursor:self.cursor + cfg.batch_size]].to(dev)
        self.cursor += cfg.batch_size
        return b

    def _header(self) -> dict:
        h = {"format": CHECKPOINT_FORMAT, "config": json.dumps(asdict(self.cfg)),
             "model_config": self.cfg.model_config().to_json()}
        if getattr(self.model, "config", None) is None:  # a network passed to train(model=...)
            h["own_model"] = self.model.kind
        return h

    def save_latest(self, opt_state: dict, torch_rng: torch.Tensor) -> None:
        if self.run_dir is None:
            return
        atomic_torch_save({
            **self._header(), "state_dict": self.model.state_dict(), "optimizer": opt_state, "torch_rng": torch_rng,
            "data_rng": self.g.get_state(), "step": self.step, "perm": self.perm, "cursor": self.cursor,
            "seconds": self.secs, "streak": self.streak, "history": json.dumps(self.history)}, self.run_dir / "latest.pt")
        atomic_write_json(self.run_dir / "metrics.json", self.history, digits=_METRICS_DIGITS)

    def save_checkpoint(self) -> None:
        if self.run_dir is None:
            return
        atomic_torch_save({**self._header(), "step": self.step, "state_dict": self.model.state_dict()},
                          self.run_dir / "ckpt" / f"step_{self.step:06d}.pt")

    def save_best(self, rec: dict) -> None:
        """Keep the best evaluation so far, judged on fresh trials of training counts only (held-out
        counts are a test set); later wins ties. Transformers dip in and out of a solved state."""
        if self.run_dir is None:
            return
        if rec["trial_acc_train"] >= max((r["trial_acc_train"] for r in self.history), default=-1.0):
            atomic_torch_save({**self._header(), "step": rec["step"], "state_dict": self.model.state_dict()},
                              self.run_dir / "best.pt")

    def record(self, train_loss: float, metrics: dict | None = None) -> dict:
        """Evaluate, decide on stopping, keep the record (and the best weights); returns it.
        ``metrics``: the evaluation already done (``batched`` evaluates all its seeds at once)."""
        cfg, step = self.cfg, self.step
        rec = {"step": step, "epoch": step * cfg.batch_size / cfg.n_train_trials, "seconds": round(self.secs, 3),
               "lr": lr_at(step, cfg), "train_loss": train_loss}
        if metrics is None:
            metrics = {f"{k}_{name}": v for name, trials in self.evals.items() for k, v in evaluate(self.model, trials).items()}
        rec.update(metrics)
        if step > 0 or self.history:
            self.streak = self.streak + 1 if rec["trial_acc_train"] >= cfg.solve_threshold else 0
            if cfg.patience and self.streak >= cfg.patience:
                rec["stopped_because"] = _solved_reason(cfg)
            elif step >= cfg.max_steps:
                rec["stopped_because"] = _max_steps_reason(cfg)
        self.save_best(rec)
        self.history.append(rec)
        return rec

    def start(self) -> None:
        """A fresh run's first evaluation and checkpoint (nothing when resuming)."""
        if not self.resuming:
            self.record(float("nan"))
            if is_checkpoint_step(0):
                self.save_checkpoint()

    def evaluates_at(self, step: int) -> bool:
        """Whether the run evaluates after optimiser step ``step`` (``evaluates_at(self.step + 1)``: the coming one)."""
        return step % self.cfg.eval_every == 0 or step == self.cfg.max_steps

    def after_step(self, loss_value: float, losses: list, t0: float, opt_state_fn, rng_fn,
                   metrics: dict | None = None) -> tuple[bool, float]:
        """Bookkeeping after one optimiser step: evaluate on schedule (``metrics``, if given, is
        that evaluation, done elsewhere), save on schedule. Returns (finished, new t0)."""
        cfg = self.cfg
        self.step += 1
        losses.append(loss_value)
        finished = False
        if self.evaluates_at(self.step):
            self.secs += time.perf_counter() - t0
            rec = self.record(sum(losses) / len(losses), metrics)
            losses.clear()
            finished = "stopped_because" in rec
            t0 = time.perf_counter()
        if is_checkpoint_step(self.step) or finished or self.step >= cfg.max_steps:
            self.save_checkpoint()
            self.save_latest(opt_state_fn(), rng_fn())
        return finished or self.step >= cfg.max_steps, t0


def train(
    cfg: TrainConfig | None = None,
    run_dir: str | Path | None = "auto",
    device: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
    model: SequenceModel | None = None,
    **overrides,
) -> RunResult:
    """Train a network as ``cfg`` says (keywords override fields); resume if ``run_dir`` holds a run.

    run_dir: "auto" -> ``data/runs/<cfg.run_name()>`` (``<task>-<arch>-d<width>-s<seed>`` for the book's
    recipe, a hash of the fields that differ appended for any other); None -> keep nothing on disk.
    The config is checked before anything is written, so a bad task or width leaves no trace.

    model: train this network instead of building ``cfg.arch`` (your own module wrapped with
    ``wrap_model``, or a HuggingFace model wrapped with ``symlib.networks.hf.wrap_hf``); ``cfg.arch`` then
    only picks the recipe (``"transformer"``: teacher forcing and void tokens; an RNN: free running).
    Its run is kept on disk only when ``run_dir`` is a path (resume by calling again with the
    same, freshly built model); ``load_run`` cannot rebuild it.
    """
    cfg = TrainConfig(**{**(asdict(cfg) if cfg else {}), **overrides})
    dev = resolve_device(device)
    if run_dir == "auto":
        run_dir = None if model is not None else runs_dir() / cfg.run_name()
    run_dir = Path(run_dir) if run_dir is not None else None

    g = seed_everything(cfg.seed)
    if model is None:
        model = build_model(cfg.model_config())
    elif not isinstance(model, SequenceModel):
        raise TypeError(f"model must be a symlib network: wrap your {type(model).__name__} with symlib.wrap_model "
                        "(your own module) or symlib.networks.hf.wrap_hf (a HuggingFace causal LM) first")
    model = model.to(dev)
    model.task_name = cfg.task
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    run = _Run(cfg, run_dir, model, g, overwrite)
    if run.resuming:
        opt.load_state_dict(run.opt_state)
        torch.set_rng_state(run.torch_rng)
    run.start()
    done = run.done
    bar = None
    if progress and not done:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.max_steps, initial=run.step, desc=f"train {model.kind} on {cfg.task}", unit="step")
    losses: list[float] = []
    try:
        t0 = time.perf_counter()
        while not done and run.step < cfg.max_steps:
            model.train()
            b = run.next_batch(dev)
            for pg in opt.param_groups:
                pg["lr"] = lr_at(run.step, cfg)
            if cfg.response_input == "free":
                # the network's own (dropout-free) predictions are fed at the response positions
                loss = free_running_loss(model, b.tokens, b.task_mask)
            else:
                loss = training_loss(model, b.tokens, b.tokens)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done, t0 = run.after_step(loss.item(), losses, t0, opt.state_dict, torch.get_rng_state)
            if bar is not None:
                bar.update(1)
                if run.history and run.history[-1]["step"] == run.step:  # it has just evaluated
                    h = run.history[-1]
                    bar.set_postfix(train=f"{h['trial_acc_train']:.3f}", heldout=f"{h['trial_acc_heldout']:.3f}")
        if done:
            finish_bar(bar)
    except KeyboardInterrupt:
        run.save_latest(opt.state_dict(), torch.get_rng_state())  # resume later by calling train() again with the same run_dir
        raise
    finally:
        if bar is not None:
            bar.close()
    run.save_latest(opt.state_dict(), torch.get_rng_state())
    model.eval()
    return RunResult(model, cfg, run_dir, run.history, _summarise(run.history, cfg))


def load_checkpoint(path: str | Path, device: str = "auto") -> tuple[SequenceModel, TrainConfig, int]:
    """Load a checkpoint file safely (weights only); return (model in eval mode, config, step)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    st = torch.load(path, weights_only=True, map_location="cpu")
    if st.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a symlib checkpoint (format {st.get('format')!r})")
    if "own_model" in st:
        raise ValueError(f"{path} holds the weights of a {st['own_model']} you built yourself: build it again and "
                         "load them with model.load_state_dict(torch.load(path)['state_dict'])")
    cfg = _config_from(path, json.loads(st["config"]))
    model = build_model(ModelConfig(**json.loads(st["model_config"])))
    model.load_state_dict(st["state_dict"])
    model.task_name = cfg.task
    return model.to(resolve_device(device)).eval(), cfg, int(st["step"])


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    """Steps with a saved checkpoint in ``run_dir``, in order."""
    return sorted(int(p.stem.split("_")[1]) for p in (Path(run_dir) / "ckpt").glob("step_*.pt"))


def load_run(run_dir: str | Path, step: int | str | None = None, device: str = "auto") -> RunResult:
    """Load a saved run: the model at ``step`` (default: the last; ``"best"``: the best evaluation),
    its config and history (exact, from ``latest.pt``; ``metrics.json`` holds it rounded for reading)."""
    run_dir = Path(run_dir)
    if not (run_dir / "latest.pt").exists():
        raise FileNotFoundError(f"{run_dir} holds no finished or interrupted run (no latest.pt)")
    if step is None:
        model, cfg, step = load_checkpoint(run_dir / "latest.pt", device)
    elif step == "best":
        model, cfg, step = load_checkpoint(run_dir / "best.pt", device)
    else:
        steps = checkpoint_steps(run_dir)
        if step not in steps:
            raise ValueError(f"no checkpoint at step {step} in {run_dir}; saved steps: {steps}")
        model, cfg, _ = load_checkpoint(run_dir / "ckpt" / f"step_{step:06d}.pt", device)
    history = json.loads(torch.load(run_dir / "latest.pt", weights_only=True, map_location="cpu")["history"])
    return RunResult(model, cfg, run_dir, history, _summarise(history, cfg))


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive inter-process lock on a run while the block runs.

    The lock is the file ``.<run name>.lock`` beside the run folder, taken with ``filelock``
    (cross-platform: an OS-level lock on Linux, macOS and Windows, released if the process dies;
    the file is left in place). Processes that want the same run wait here, one at a time;
    ``load_or_train`` trains inside it, so two sweep workers asking for the same network train
    it once.
    """
    from filelock import FileLock
    path = Path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.parent / f".{path.name}.lock")):
        yield


def run_finished(path: Path, cfg: TrainConfig | None = None) -> bool:
    """Whether the folder ``path`` holds a run that ended by its own rule (``_ended_by_rule``: solved,
    or at exactly its ``max_steps``) and, with ``cfg``, was trained by exactly that recipe.

    An interrupted run is not finished, nor one whose last record stopped it for a reason its
    config does not give (another patience or step cap: a config rewritten for a longer run,
    say), nor one whose config this version refuses (a negative patience).
    """
    m, c = path / "metrics.json", path / "config.json"
    if not (path / "latest.pt").exists() or not m.exists() or not c.exists():
        return False
    there = json.loads(c.read_text())
    if cfg is not None and _recipe_differences(there, cfg):
        return False
    try:
        own = TrainConfig.from_dict(there)
    except (ValueError, TypeError):
        return False
    return _ended_by_rule(json.loads(m.read_text()), own, _METRICS_DIGITS)


def run_config(run_dir: str | Path) -> TrainConfig:
    """The ``TrainConfig`` of a run saved by ``train`` (its ``config.json``), e.g. to check what a
    ``RUN_DIR`` holds before doing any work with it."""
    path = Path(run_dir)
    if not str(run_dir) or not (path / "config.json").exists():
        why = "does not exist" if not path.exists() else "holds no saved run (no config.json)"
        raise FileNotFoundError(f"run_dir={str(run_dir)!r} {why}; give a folder written by train() "
                                "(notebook 02, under data/runs/) or leave it empty to train one")
    return _config_from(path, json.loads((path / "config.json").read_text()))


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def load_or_train(task: str | None = None, arch: str | None = None, seed: int = 0, run_dir: str | Path = "",
                  device: str = "auto", progress: bool = True, **train_kw) -> RunResult:
    """Load the best checkpoint of the run of a recipe, training (or finishing) it first if needed.

    Empty run_dir: the run of ``TrainConfig(task, arch, seed, **train_kw)`` (``task`` None means
    multiobject, ``arch`` None gru), in ``data/runs/<TrainConfig.run_name()>``: the book's recipe
    in ``<task>-<arch>-d<width>-s<seed>`` (what notebook 02 trains), any other recipe in a folder
    of its own (the name ends in a hash of what differs), so asking for one recipe never returns
    a network another recipe trained. A folder that holds a run of another recipe anyway (written
    by an older version, or extended by hand) raises a ValueError saying what is there and what
    was asked. A run is finished only once it ended by its own rule (solved, or at its
    ``max_steps``); an interrupted one is resumed.

    run_dir: a run saved by ``train`` (notebook 02). Its own config decides the task,
    architecture and everything else (it is resumed with that config if unfinished; ``seed`` is
    not used); ``task``, ``arch`` and any ``train_kw``, when given, must match it, else a
    ValueError says what the run holds.
    """
    if task is not None:
        check_choice("task", task, TASK_NAMES)
    if arch is not None:
        check_choice("architecture", arch, ARCH_NAMES)
    if run_dir:
        path = Path(run_dir)
        cfg = run_config(path)
        wrong = [f"{k.upper()}={v!r}" for k, v, have in (("task", task, cfg.task), ("arch", arch, cfg.arch))
                 if v is not None and v != have]
        if wrong:
            raise ValueError(
                f"RUN_DIR ({path}) holds {_a(cfg.arch)} trained on {cfg.task}, but {' and '.join(wrong)} was asked for; "
                f"set TASK/ARCH to match (task={cfg.task!r}, arch={cfg.arch!r}) or leave RUN_DIR empty")
        if train_kw:
            differ = _recipe_differences(asdict(cfg), TrainConfig(**{**asdict(cfg), **train_kw}))
            if differ:
                pairs = "; ".join(f"{k}={a!r} there, {k}={b!r} asked" for k, (a, b) in sorted(differ.items()))
                raise ValueError(f"RUN_DIR ({path}) holds a run of another recipe ({pairs}); "
                                 "ask for its recipe or leave RUN_DIR empty")
    else:
        cfg = TrainConfig(task=task or "multiobject", arch=arch or "gru", seed=seed, **train_kw)
        path = runs_dir() / cfg.run_name()
        check_same_recipe(path, cfg)
    if not run_finished(path, cfg):
        with run_lock(path):  # another process (a sweep's worker) may be training this run right now
            if not run_finished(path, cfg):  # it finished while we waited: just load it
                check_same_recipe(path, cfg)
                train(cfg, run_dir=path, device=device, progress=progress)
            if not run_finished(path, cfg):
                raise RuntimeError(f"training {path} returned without the run ending by its rule "
                                   f"(solved, or max_steps={cfg.max_steps}); its last record: {_last_record(path)}")
    return load_run(path, step="best" if (path / "best.pt").exists() else None, device=device)


def _last_record(path: Path) -> dict | None:
    m = path / "metrics.json"
    hist = json.loads(m.read_text()) if m.exists() else []
    return hist[-1] if hist else None

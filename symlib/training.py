"""Train a network on a counting task: the original recipe, an explicit stopping rule,
dense-then-sparse checkpoints, resumable runs.

A run lives in one folder (``data/runs/<name>/``)::

    config.json        the TrainConfig that made it
    metrics.json       one record per evaluation
    latest.pt          everything needed to resume (model, optimiser, RNG, data order)
    ckpt/step_000100.pt   model weights on the checkpoint schedule (for learning dynamics)

Checkpoints hold only tensors and plain values and are loaded with
``torch.load(weights_only=True)``, so loading one cannot run arbitrary code.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from .models import ARCH_NAMES, ModelConfig, SequenceModel, build_model
from .paths import runs_dir
from .tasks import COUNT_SETS, TASK_NAMES, Task, Trials, make_task
from .utils import atomic_torch_save, atomic_write_json, check_choice, finish_bar, resolve_device, seed_everything

try:
    import fcntl
except ImportError:  # no fcntl (Windows): run_lock does not lock
    fcntl = None

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


@dataclass
class TrainConfig:
    """Everything that defines a training run (the original recipe's defaults; README, "The science in brief")."""

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
    max_steps: int = 3000
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
        check_choice("response_input", self.response_input, RESPONSE_INPUTS)
        for name in ("batch_size", "n_train_trials", "max_steps", "eval_every", "n_eval_trials"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        self.model_config()  # raises if the width does not fit the architecture
        make_task(self.task, self.unk_p)

    def model_config(self) -> ModelConfig:
        return ModelConfig(arch=self.arch, vocab_size=make_task(self.task).vocab_size, d_model=self.d_model, dropout=self.dropout)

    def make_task(self) -> Task:
        return make_task(self.task, self.unk_p)

    def run_name(self) -> str:
        return f"{self.task}-{self.arch}-d{self.d_model}-s{self.seed}"

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


def _prepare_run_dir(run_dir: Path, cfg: TrainConfig, overwrite: bool) -> bool:
    """Make ``run_dir`` ready; return True when there is a run to resume."""
    cfg_path = run_dir / "config.json"
    if run_dir.exists() and overwrite:
        shutil.rmtree(run_dir)
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        new = asdict(cfg)
        differ = {k for k in new if k != "max_steps" and old.get(k) != new[k]}
        if differ:
            raise ValueError(
                f"{run_dir} holds a run with a different config ({', '.join(sorted(differ))} differ); "
                "choose another run_dir or pass overwrite=True")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg_path, asdict(cfg), digits=None)  # exact: a resumed run is compared with it
    return (run_dir / "latest.pt").exists()


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
        self.resuming = run_dir is not None and _prepare_run_dir(run_dir, cfg, overwrite)
        if self.resuming:
            st = torch.load(run_dir / "latest.pt", weights_only=True, map_location="cpu")
            model.load_state_dict(st["state_dict"])
            self.opt_state, self.torch_rng = st["optimizer"], st["torch_rng"]
            g.set_state(st["data_rng"])
            self.step, self.perm, self.cursor, self.secs, self.streak = st["step"], st["perm"], st["cursor"], st["seconds"], st["streak"]
            self.history = json.loads(st["history"])

    @property
    def done(self) -> bool:
        """Solved and stopped (a run that only ran out of steps goes on if max_steps grew)."""
        return bool(self.history and str(self.history[-1].get("stopped_because", "")).startswith("solved"))

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
        atomic_write_json(self.run_dir / "metrics.json", self.history)

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

    def record(self, train_loss: float) -> dict:
        """Evaluate, decide on stopping, keep the record (and the best weights); returns it."""
        cfg, step = self.cfg, self.step
        rec = {"step": step, "epoch": step * cfg.batch_size / cfg.n_train_trials, "seconds": round(self.secs, 3),
               "lr": lr_at(step, cfg), "train_loss": train_loss}
        for name, trials in self.evals.items():
            for k, v in evaluate(self.model, trials).items():
                rec[f"{k}_{name}"] = v
        if step > 0 or self.history:
            self.streak = self.streak + 1 if rec["trial_acc_train"] >= cfg.solve_threshold else 0
            if cfg.patience and self.streak >= cfg.patience:
                rec["stopped_because"] = f"solved: trial accuracy on training counts >= {cfg.solve_threshold} for {cfg.patience} evaluations"
            elif step >= cfg.max_steps:
                rec["stopped_because"] = f"max_steps={cfg.max_steps} reached"
        self.save_best(rec)
        self.history.append(rec)
        return rec

    def start(self) -> None:
        """A fresh run's first evaluation and checkpoint (nothing when resuming)."""
        if not self.resuming:
            self.record(float("nan"))
            if is_checkpoint_step(0):
                self.save_checkpoint()

    def after_step(self, loss_value: float, losses: list, t0: float, opt_state_fn, rng_fn) -> tuple[bool, float]:
        """Bookkeeping after one optimiser step: evaluate on schedule, save on schedule.
        Returns (finished, new t0)."""
        cfg = self.cfg
        self.step += 1
        losses.append(loss_value)
        finished = False
        if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
            self.secs += time.perf_counter() - t0
            rec = self.record(sum(losses) / len(losses))
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

    run_dir: "auto" -> ``data/runs/<task>-<arch>-d<width>-s<seed>``; None -> keep nothing on disk.
    The config is checked before anything is written, so a bad task or width leaves no trace.

    model: train this network instead of building ``cfg.arch`` (your own module wrapped with
    ``wrap_model``, or a HuggingFace model wrapped with ``symlib.hf.wrap_hf``); ``cfg.arch`` then
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
                        "(your own module) or symlib.hf.wrap_hf (a HuggingFace causal LM) first")
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
                if run.step % cfg.eval_every == 0:
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
    cfg = TrainConfig.from_dict(json.loads(st["config"]))
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

    The lock is ``fcntl.flock`` on ``.<run name>.lock`` beside the run folder (the file is left
    in place: deleting a lock file races with a process about to take it). Processes that
    want the same run wait here, one at a time; ``load_or_train`` trains inside it, so two
    sweep workers asking for the same network train it once. Without fcntl (Windows) it
    does not lock.
    """
    path = Path(run_dir)
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _finished(path: Path) -> bool:
    m = path / "metrics.json"
    if not (path / "latest.pt").exists() or not m.exists():
        return False
    hist = json.loads(m.read_text())
    return bool(hist) and bool(hist[-1].get("stopped_because"))


def run_config(run_dir: str | Path) -> TrainConfig:
    """The ``TrainConfig`` of a run saved by ``train`` (its ``config.json``), e.g. to check what a
    ``RUN_DIR`` holds before doing any work with it."""
    path = Path(run_dir)
    if not str(run_dir) or not (path / "config.json").exists():
        why = "does not exist" if not path.exists() else "holds no saved run (no config.json)"
        raise FileNotFoundError(f"run_dir={str(run_dir)!r} {why}; give a folder written by train() "
                                "(notebook 02, under data/runs/) or leave it empty to train one")
    return TrainConfig.from_dict(json.loads((path / "config.json").read_text()))


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def load_or_train(task: str | None = None, arch: str | None = None, seed: int = 0, run_dir: str | Path = "",
                  device: str = "auto", progress: bool = True, **train_kw) -> RunResult:
    """Load the best checkpoint of a saved run, training (or finishing) it first if needed.

    run_dir: a run saved by ``train`` (notebook 02). Its own config decides the task,
    architecture and everything else (it is resumed with that config if unfinished, and
    ``seed`` and ``train_kw`` are not used); ``task`` or ``arch``, when given, must match it,
    else a ValueError says what the run holds.
    Empty: ``data/runs/<task>-<arch>-d<width>-s<seed>``, trained with ``TrainConfig(task, arch,
    seed, **train_kw)`` when missing; ``task`` None means multiobject, ``arch`` None gru.
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
    else:
        cfg = TrainConfig(task=task or "multiobject", arch=arch or "gru", seed=seed, **train_kw)
        path = runs_dir() / cfg.run_name()
    if not _finished(path):
        with run_lock(path):  # another process (a sweep's worker) may be training this run right now
            if not _finished(path):  # it finished while we waited: just load it
                train(cfg, run_dir=path, device=device, progress=progress)
    return load_run(path, step="best" if (path / "best.pt").exists() else None, device=device)

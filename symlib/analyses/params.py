"""Every chapter's parameters, described once and checked before any work.

A chapter's first code cell runs ``check_notebook(<chapter>, globals())``; a sweep
(``python -m symlib sweep``) runs the same check on every cell of a notebook grid (the
notebook's own defaults filled in) and, through ``symlib.analyses.compare.validate_params``, on every
cell of a ``compare_cell`` grid, before any cell runs. So a bad value fails in seconds, before
any network is trained or anything is written, with one short message per bad parameter: its
name as the reader typed it (``N_UNITS`` in a notebook, ``n_units`` in a function grid), the
value, and the one rule it breaks::

    N_UNITS=0 is not allowed: it must be a whole number >= 1 (dims of each aligned block)
    SWEEP='16,256' is not allowed: 256 dims is wider than the network's state (128 dims, the book's width)

Each chapter (``CHAPTERS``) is a mapping parameter -> rule (a type and range, a choice, a
list whose items each follow a rule, a path that must exist) and a cross-check of parameters
against each other (a subspace no wider than the network's state, a variable the program
has, a seed among the seeds). Sizes are read from the architecture and width, as
``symlib.networks.models`` builds them, without building a network (``state_width``, ``sites_of``).

The test suite's tiny sizes (``SMOKE = True`` or ``SYMLIB_SMOKE=1``) are defined here too,
once, for every chapter and ``symlib.analyses.compare``: ``SMOKE_TRAIN``, ``SMOKE_TRAIN_DYNAMICS``,
``SMOKE_SEARCH``, ``SMOKE_HELDOUT``, ``SMOKE_BOUNDLESS_STEPS``, ``SMOKE_WARM_STEPS``, ``SMOKE_MAS``,
``SMOKE_UNITS``, ``SMOKE_OWN_MODEL``.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..game.counterfactuals import GENERIC_VARIABLES, VARIABLE_NAMES
from ..game.programs import PROGRAM_NAMES, PROGRAMS
from ..game.tasks import TASK_NAMES
from ..networks.hf import HF_FAMILIES
from ..networks.models import ARCH_NAMES, ModelConfig
from ..networks.training import TrainConfig
from ..intervene.alignment import ALIGNMENT_NAMES
from ..intervene.controls import CONTROL_NAMES
from ..intervene.search import BUDGETS, SearchConfig

# ---- the test suite's tiny sizes, defined once -----------------------------------------

#: Training at smoke size: chapters 00, 02 (which keeps its D_MODEL), 03, 08 and ``compare`` share one tiny run.
SMOKE_TRAIN: dict = dict(d_model=32, max_steps=24, eval_every=8, n_eval_trials=64, n_train_trials=256)
#: Training at smoke size where a run's checkpoints are followed (chapters 05 and 06, chapter 07's book
#: network): 50 steps, checkpoints at 0, 25 and 50.
SMOKE_TRAIN_DYNAMICS: dict = dict(d_model=32, max_steps=50, n_eval_trials=64, n_train_trials=256)
#: A DAS search at smoke size (chapters 03, 04, 05, 08 and ``compare``): ``search.BUDGETS["smoke"]``.
SMOKE_SEARCH: dict = dict(BUDGETS["smoke"])
#: Test pairs on held-out counts at smoke size (at most; chapters 03, 04 and ``compare``).
SMOKE_HELDOUT: int = 64
#: A boundless search's cap at smoke size (chapter 03).
SMOKE_BOUNDLESS_STEPS: int = 40
#: A MAS search (and chapter 07's DAS searches) at smoke size (chapters 06 and 07).
SMOKE_MAS: dict = dict(n_train=256, n_val=64, n_test=64, eval_every=5, max_steps=10)
#: The cap on a warm-started search at smoke size (chapter 05).
SMOKE_WARM_STEPS: int = 10
#: Dims of an aligned block at smoke size (chapters 05, 06 and 07).
SMOKE_UNITS: int = 4
#: Chapter 07's own networks at smoke size: width, training steps and evaluation sizes.
SMOKE_OWN_MODEL: dict = dict(d_model=16, steps=40, train=dict(n_eval_trials=64, n_train_trials=256, eval_every=10))
#: Blocks of chapter 07's HuggingFace model (``symlib.networks.hf.tiny_hf(..., n_layer=HF_BLOCKS)``).
HF_BLOCKS: int = 2

#: The book's network width (``TrainConfig``'s default).
BOOK_D_MODEL: int = next(f.default for f in fields(TrainConfig) if f.name == "d_model")
#: Pairs per step of a search (``SearchConfig``'s default): a search needs at least this many training pairs.
SEARCH_BATCH: int = next(f.default for f in fields(SearchConfig) if f.name == "batch_size")


class ParamError(ValueError):
    """Parameter values that are not allowed; the message names each one as typed, its value and the rule it breaks."""


class _Bad(Exception):
    """Raised by a rule: the reason a value is not allowed."""


@dataclass(frozen=True)
class Context:
    """What a check may depend on beyond the values: the smoke size, whether the work runs on
    this machine (``local``: a CUDA device must then be here), and the folder relative paths are
    read from (``base``: a notebook's folder, where papermill runs it; None: the current one)."""

    smoke: bool = False
    local: bool = True
    base: Path | None = None

    def path(self, p: str) -> Path:
        p = Path(p).expanduser()
        return p if p.is_absolute() or self.base is None else Path(self.base) / p


# ---- sizes read without building a network ----------------------------------------------

def sites_of(arch: str) -> tuple[str, ...]:
    """The intervention sites of an architecture at the book's depth (as ``symlib.networks.models`` builds it)."""
    cfg = ModelConfig(arch=arch, vocab_size=8, d_model=8)
    if arch.startswith("transformer"):
        return ("embed",) + tuple(f"resid.{k}" for k in range(cfg.n_layers))
    return ("state", "embed")


def default_site(arch: str) -> str:
    """The site a search uses when none is given."""
    return "resid.0" if arch.startswith("transformer") else "state"


def state_width(arch: str, d_model: int, site: str | None = None) -> int:
    """The width of the state at ``site`` (default: the architecture's default site) of a network of
    width ``d_model``: an RNN's state is ``d_model`` wide (an LSTM's is [h; c]), its embedding the
    hidden size (half of it for an LSTM); a Transformer's residual stream is ``d_model`` at every site."""
    site = site or default_site(arch)
    if arch == "lstm" and site == "embed":
        return d_model // 2
    return d_model


def width_problem(arch: str, d_model: int) -> str | None:
    """Why a network of this architecture cannot be ``d_model`` wide, or None."""
    if arch == "lstm" and d_model % 2:
        return "an LSTM's state is [h; c], so its width must be even"
    if arch == "transformer" and d_model % 2:
        return "a transformer's rotary positions (RoPE) need an even width"
    try:
        ModelConfig(arch=arch, vocab_size=8, d_model=d_model)
    except ValueError as e:
        return str(e)
    return None


def program_variables(program: str) -> tuple[str, ...]:
    """The variables a search may name for ``program``: the generic ones, then its own."""
    return GENERIC_VARIABLES + tuple(v for v in PROGRAMS[program].variables if v not in GENERIC_VARIABLES)


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" or word == "lstm" else f"a {word}"


# ---- rules ------------------------------------------------------------------------------

def _whole(v: Any) -> int | None:
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and v == int(v):
        return int(v)
    return None


def _number(v: Any) -> float | None:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    return float(v) if math.isfinite(float(v)) else None


def _what(what: str) -> str:
    return f" ({what})" if what else ""


class Rule:
    """A parameter's rule: ``check`` returns the value as the chapter uses it, or raises ``_Bad``."""

    #: a list-valued rule (its value is parsed; a notebook keeps the text it was given)
    is_list = False

    def check(self, v: Any, ctx: Context, subject: str = "it") -> Any:
        raise NotImplementedError


class _Number(Rule):
    """A number in a range or one of ``special`` (value, meaning): ``Int`` and ``Float`` say how to read
    one (``_read``), which are in range (``_in_range``) and how to say the range (``_range``)."""

    def allowed(self) -> str:
        specials = " or ".join(f"{v:g} ({meaning})" for v, meaning in self.special)
        return (f"{specials} or {self._range()}" if specials else self._range()) + _what(self.what)

    def check(self, v, ctx, subject="it"):
        x = self._read(v)
        if x is not None and (any(x == s for s, _ in self.special) or self._in_range(x)):
            return x
        raise _Bad(f"{subject} must be {self.allowed()}")


@dataclass(frozen=True)
class Int(_Number):
    """A whole number from ``low`` to ``high`` (None: unbounded), or one of ``special`` (value, meaning)."""
    low: int | None = None
    what: str = ""
    high: int | None = None
    special: tuple = ()

    _read = staticmethod(lambda v: _whole(v))

    def _in_range(self, x) -> bool:
        return (self.low is None or x >= self.low) and (self.high is None or x <= self.high)

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            return f"a whole number from {self.low} to {self.high}"
        return f"a whole number >= {self.low}" if self.low is not None else "a whole number"


@dataclass(frozen=True)
class Float(_Number):
    """A finite number above ``low`` (``low_in``: or equal) and below ``high`` (``high_in``: or equal), or a special value."""
    low: float | None = None
    low_in: bool = True
    high: float | None = None
    high_in: bool = True
    what: str = ""
    special: tuple = ()

    _read = staticmethod(lambda v: _number(v))

    def _in_range(self, x) -> bool:
        ok = self.low is None or (x >= self.low if self.low_in else x > self.low)
        return ok and (self.high is None or (x <= self.high if self.high_in else x < self.high))

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            return f"a number in {'[' if self.low_in else '('}{self.low:g}, {self.high:g}{']' if self.high_in else ')'}"
        return f"a number {'>=' if self.low_in else '>'} {self.low:g}" if self.low is not None else "a number"


@dataclass(frozen=True)
class Bool(Rule):
    what: str = ""

    def check(self, v, ctx, subject="it"):
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        raise _Bad(f"{subject} must be True or False{_what(self.what)}")


@dataclass(frozen=True)
class Choice(Rule):
    """One of ``choices`` (a tuple, or a function returning one), or ``""`` when ``empty`` says what that means."""
    choices: Any
    empty: str | None = None

    def valid(self) -> tuple[str, ...]:
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def check(self, v, ctx, subject="it"):
        valid = self.valid()
        if isinstance(v, str) and (v in valid or (v == "" and self.empty is not None)):
            return v
        listed = ", ".join(valid) + (f", or empty ({self.empty})" if self.empty is not None else "")
        head = "valid choices" if subject == "it" else f"{subject} is not one of the valid choices"
        raise _Bad(f"{head}: {listed}{_did_you_mean(v, valid)}")


def _did_you_mean(v: Any, valid) -> str:
    if not isinstance(v, str) or not v:
        return ""
    key = v.strip().lower()
    near = ([c for c in valid if c.lower() == key] or [c for c in valid if sorted(c.split("_")) == sorted(key.split("_"))]
            or difflib.get_close_matches(key, valid, n=1, cutoff=0.7))
    return f" (did you mean {near[0]!r}?)" if near else ""


@dataclass(frozen=True)
class Device(Rule):
    """auto, cpu, cuda or cuda:N; with ``ctx.local``, cuda only where a CUDA device is present."""

    def check(self, v, ctx, subject="it"):
        if not isinstance(v, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise _Bad(f"valid choices: auto (CUDA when present), cpu, cuda or cuda:N{_did_you_mean(v, ('auto', 'cpu', 'cuda'))}")
        if ctx.local and v.startswith("cuda"):
            import torch
            if not torch.cuda.is_available():
                raise _Bad("no CUDA device is available here; use 'auto' or 'cpu'")
            if ":" in v and int(v.split(":")[1]) >= torch.cuda.device_count():
                raise _Bad(f"this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0")
        return v


@dataclass(frozen=True)
class Network(Rule):
    """``arch:seed`` (e.g. gru:0), parsed as (arch, seed); ``empty`` says what ``""`` means, when allowed."""
    empty: str | None = None

    def check(self, v, ctx, subject="it"):
        if v == "" and self.empty is not None:
            return None
        form = "arch:seed, e.g. gru:0" + (f", or empty ({self.empty})" if self.empty is not None else "")
        if not isinstance(v, str) or v.count(":") != 1:
            raise _Bad(f"{subject} must be {form}")
        arch, seed = (s.strip() for s in v.split(":"))
        pre = "" if subject == "it" else f"{subject}: "
        if arch not in ARCH_NAMES:
            raise _Bad(f"{pre}unknown architecture {arch!r}; valid choices: {', '.join(ARCH_NAMES)}"
                       + _did_you_mean(arch, ARCH_NAMES))
        if not re.fullmatch(r"[0-9]+", seed):
            raise _Bad(f"{pre}the seed must be a whole number >= 0, as in gru:0")
        return arch, int(seed)


@dataclass(frozen=True)
class ListOf(Rule):
    """A comma-separated list (or a list, or a single number) whose items each follow ``item``.
    min_items: how many it needs (0: may be empty); unique: no item twice; noun: what an item is."""
    item: Rule
    min_items: int = 1
    unique: bool = True
    what: str = ""
    noun: str = "item"
    is_list = True

    def check(self, v, ctx, subject="it"):
        if isinstance(v, str):
            text = v.strip()
            if text[:1] + text[-1:] in ("[]", "()"):
                text = text[1:-1]
            raw = [s.strip() for s in text.split(",") if s.strip()]
            if isinstance(self.item, Int):
                raw = [_int_text(s) for s in raw]
        elif isinstance(v, (list, tuple)):
            raw = list(v)
        elif _number(v) is not None:
            raw = [v]
        else:
            raise _Bad(f"{subject} must be a comma-separated list{_what(self.what)}")
        items = [self.item.check(x, ctx, subject=f"item {x!r}") for x in raw]
        if len(items) < self.min_items:
            need = f"at least one {self.noun}" if self.min_items == 1 else f"at least {self.min_items} {self.noun}s"
            raise _Bad(f"{subject} must name {need}{_what(self.what)}")
        if self.unique:
            seen = set()
            for x, shown in zip(items, raw):
                if x in seen:
                    raise _Bad(f"{subject} repeats {shown if isinstance(shown, str) else repr(shown)}; give each once")
                seen.add(x)
        return items


def _int_text(s: str) -> Any:
    """A list item typed as text: the number it spells when it is one (``"16"``, ``"-1"``, ``"16.0"``), else the text."""
    try:
        return int(s)
    except ValueError:
        try:
            x = float(s)
        except ValueError:
            return s
        return x if math.isfinite(x) else s


@dataclass(frozen=True)
class Text(Rule):
    """Any string (a file to write, for ``RESULTS_PATH``: not an existing folder)."""
    what: str = ""
    file: bool = False

    def check(self, v, ctx, subject="it"):
        if not isinstance(v, str):
            raise _Bad(f"{subject} must be a string{_what(self.what)}")
        if self.file and v and ctx.path(v).is_dir():
            raise _Bad(f"{subject} is a folder; give a file path{_what(self.what)}")
        return v


@dataclass(frozen=True)
class RunDir(Rule):
    """Empty, or a folder holding a run saved by ``train`` (its config.json)."""

    def check(self, v, ctx, subject="it"):
        if not isinstance(v, str):
            raise _Bad(f"{subject} must be a folder path or empty")
        if not v:
            return v
        p = ctx.path(v)
        if not p.is_dir():
            raise _Bad(f"{'no such folder' if not p.exists() else 'it is a file, not a folder'}; give a run folder "
                       "written by chapter 02 (under data/runs/), or leave it empty to train one")
        if not (p / "config.json").is_file():
            raise _Bad("the folder holds no saved run (no config.json); give a run folder written by chapter 02, "
                       "or leave it empty to train one")
        return v


@dataclass(frozen=True)
class ExistingFile(Rule):
    """Empty, or a file that exists."""
    how: str = ""

    def check(self, v, ctx, subject="it"):
        if not isinstance(v, str):
            raise _Bad(f"{subject} must be a file path or empty")
        if v and not ctx.path(v).is_file():
            raise _Bad(f"{'no such file' if not ctx.path(v).exists() else 'it is not a file'}{'; ' + self.how if self.how else ''}")
        return v


# ---- chapters ---------------------------------------------------------------------------

Cross = Callable[[dict, Context], Iterator[tuple[str, str]]]


@dataclass(frozen=True)
class Chapter:
    """A chapter's (or a sweep function's) parameters: name -> rule, in the order they are checked;
    ``cross``: checks of parameters against each other, yielding (name, reason), run once each
    parameter is fine on its own. ``smoke``: the parameter asking for the smoke size;
    ``smoke_env``: ``SYMLIB_SMOKE=1`` asks for it too (notebooks, not functions)."""
    name: str
    rules: dict
    cross: Cross | None = None
    smoke: str = "SMOKE"
    smoke_env: bool = True


#: The parameters every chapter ends with.
_EVERY_CHAPTER = {"SMOKE": Bool("the test suite's tiny size"), "DEVICE": Device(),
                  "RESULTS_PATH": Text("where this chapter's metrics go as JSON; empty: nowhere", file=True)}


def _width(ctx: Context, d_model: int | None = None) -> tuple[int, str]:
    """The width the chapter's networks have and how to say it."""
    if d_model is not None:
        return d_model, ""
    if ctx.smoke:
        return SMOKE_TRAIN["d_model"], " at the smoke size"
    return BOOK_D_MODEL, ", the book's width"


def _fits(dims: int, width: int, how: str, blocks: int = 1) -> str | None:
    if dims * blocks <= width:
        return None
    wide = f"{dims} dims x {blocks} blocks = {dims * blocks} dims is" if blocks > 1 else f"{dims} dims is"
    return f"{wide} wider than the network's state ({width} dims{how})"


def _variable_of(program: str, variable: str, name: str = "VARIABLE") -> Iterator[tuple[str, str]]:
    have = program_variables(program)
    if variable not in have:
        yield name, f"program {program} has no {variable}; valid choices: {', '.join(have)}"


def _cross_02(v, ctx):
    why = width_problem(v["ARCH"], v["D_MODEL"])
    if why:
        yield "D_MODEL", f"{why} (ARCH={v['ARCH']!r})"


def _run_cfg(v, ctx) -> TrainConfig | None:
    if not v["RUN_DIR"]:
        return None
    from ..networks.training import run_config
    return run_config(ctx.path(v["RUN_DIR"]))


def _cross_03(v, ctx):
    run = _run_cfg(v, ctx)
    if run is not None and (run.arch, run.task) != (v["ARCH"], v["TASK"]):
        yield "RUN_DIR", (f"it holds {_a(run.arch)} trained on {run.task}, but ARCH={v['ARCH']!r} and TASK={v['TASK']!r}; "
                          "set them to match the run, or leave RUN_DIR empty")
    yield from _variable_of(v["PROGRAM"], v["VARIABLE"])
    if v["VARIABLE"] == "count_phase":
        yield "VARIABLE", ("this chapter also searches a boundless alignment (section 6), which learns the size of one "
                           "block; search count and phase one at a time (chapter 04 searches count_phase)")
    width, how = _width(ctx, run.d_model if run is not None else None)
    if run is not None:
        how = ", the network in RUN_DIR"
        if v["COMPARE"]:  # the other architectures are trained at the chapter's width
            other, other_how = _width(ctx)
            if other < width:
                width, how = other, f", the other architectures' with COMPARE{other_how}"
    yield from _units_fit(v, width, how, "SWEEP")


def _units_fit(v, width: int, how: str, sizes: str):
    """N_UNITS and every size in the list parameter ``sizes`` no wider than the state (``width``)."""
    why = _fits(v["N_UNITS"], width, how)
    if why:
        yield "N_UNITS", why
    too = [k for k in v[sizes] if k > width]
    if too:
        yield sizes, _fits(too[0], width, how)


def _cross_04(v, ctx):
    offered = {w for p in v["PROGRAMS"] for w in program_variables(p)}
    lacking = [w for w in v["VARIABLES"] if w not in offered]
    if lacking:
        yield "VARIABLES", (f"no program in PROGRAMS ({', '.join(v['PROGRAMS'])}) has {lacking[0]}; "
                            f"valid choices for them: {', '.join(w for w in _VARIABLES_04 if w in offered)}")


def _cross_05(v, ctx):
    if v["SEED"] not in v["SEEDS"]:
        yield "SEED", f"it must be one of SEEDS ({', '.join(map(str, v['SEEDS']))}): the seed looked at closely"


def _cross_06(v, ctx):
    width, how = _width(ctx)
    yield from _units_fit(v, width, how, "UNITS")


def _cross_07(v, ctx):
    if v["N_UNITS"] > v["D_MODEL"]:
        yield "N_UNITS", f"{v['N_UNITS']} dims is wider than the networks (D_MODEL={v['D_MODEL']})"
    elif v["BOOK_NETWORK"] is not None:
        width, how = _width(ctx)
        why = _fits(v["N_UNITS"], width, how)
        if why:
            yield "N_UNITS", why.replace("the network's state", f"the book network's state ({v['BOOK_NETWORK'][0]})", 1)
    if v["HF_FAMILY"] == "llama" and v["D_MODEL"] % 8:
        yield "D_MODEL", ("HF_FAMILY='llama' needs a multiple of 8 (4 attention heads, each of an even width "
                          "for its rotary positions)")


def _cross_08(v, ctx):
    yield from _variable_of(v["PROGRAM"], v["VARIABLE"])


def _cross_compare(v, ctx):
    yield from _variable_of(v["program"], v["variable"], "variable")
    sites = sites_of(v["arch"])
    if v["site"] and v["site"] not in sites:
        yield "site", f"{_a(v['arch'])}'s sites are {', '.join(sites)} (empty: {default_site(v['arch'])})"
        return
    width, how = _width(ctx)
    site = v["site"] or default_site(v["arch"])
    d = state_width(v["arch"], width, site)
    if d != width:
        how = f" at site {site!r} of the {v['arch']}, {width} wide" + (" at the smoke size" if ctx.smoke else "")
    why = _fits(v["n_units"], d, how, 2 if v["variable"] == "count_phase" else 1)
    if why:
        yield "n_units", why


_STEPS = "a step cap; each search stops earlier once converged"
#: Chapter 04's VARIABLES: the number variable of each program, phase, both, or a program's own counter.
_VARIABLES_04 = ("count", "phase", "count_phase") + tuple(w for w in VARIABLE_NAMES if w not in GENERIC_VARIABLES)

CHAPTERS: dict[str, Chapter] = {c.name: c for c in (
    Chapter("00_quickstart", {
        "SEED": Int(0, "data, weights and dropout"), "MAX_STEPS": Int(1, "the cap on training steps"), **_EVERY_CHAPTER,
    }),
    Chapter("01_tasks_and_programs", {
        "SEED": Int(0, "the example trials"), "N_PAIRS": Int(1, "counterfactual pairs per program and variable"),
        **_EVERY_CHAPTER,
    }),
    Chapter("02_train_models", {
        "TASK": Choice(TASK_NAMES), "ARCH": Choice(ARCH_NAMES), "SEED": Int(0, "data, weights and dropout"),
        "D_MODEL": Int(2, "the width of the network's state"),
        "MAX_STEPS": Int(1, special=((-1, "the book's cap: 3000 for RNNs, 1000 for Transformers"),)),
        "PATIENCE": Int(0, "evaluations in a row at >= 0.99 trial accuracy before training stops; 0 never stops early"),
        "RESPONSE_INPUT": Choice(("original", "free", "teacher")),
        "UNK_P": Float(0.0, True, 1.0, False, "the void-token rate", special=((-1, "the original's rate"),)),
        **_EVERY_CHAPTER,
    }, _cross_02),
    Chapter("03_das_alignment", {
        "ARCH": Choice(ARCH_NAMES), "TASK": Choice(TASK_NAMES), "SEED": Int(0, "the network's and the pairs' seed"),
        "RUN_DIR": RunDir(), "PROGRAM": Choice(PROGRAM_NAMES), "VARIABLE": Choice(VARIABLE_NAMES),
        "N_UNITS": Int(1, "dims of each aligned block"), "ALIGNMENT": Choice(ALIGNMENT_NAMES),
        "MAX_STEPS": Int(1, _STEPS), "ILLUSTRATION_STEPS": Int(1, _STEPS), "BOUNDLESS_MAX_STEPS": Int(1, _STEPS),
        "N_TRAIN": Int(SEARCH_BATCH, f"training pairs: at least one batch of {SEARCH_BATCH}"),
        "N_VAL": Int(1, "validation pairs"), "N_TEST": Int(1, "test pairs"),
        "N_TEST_HELDOUT": Int(0, "test pairs on held-out counts; 0: none"),
        "SWEEP": ListOf(Int(1, "dims"), unique=False, noun="size", what="subspace sizes"),
        "COMPARE": Bool(), "USE_STORE": Bool(),
        **_EVERY_CHAPTER,
    }, _cross_03),
    Chapter("04_compare_programs", {
        "ARCHS": ListOf(Choice(ARCH_NAMES)), "TASKS": ListOf(Choice(TASK_NAMES)), "PROGRAMS": ListOf(Choice(PROGRAM_NAMES)),
        "VARIABLES": ListOf(Choice(_VARIABLES_04)), "SEEDS": ListOf(Int(0), noun="seed", what="network seeds"),
        "SEED": Int(0, "the networks studied one by one"), "SAMEOBJECT_ARCH": Choice(ARCH_NAMES),
        "MAX_STEPS": Int(1, _STEPS),
        "GRID_TABLE": ExistingFile("run `make compare-grid` first, or leave it empty to search now"),
        "USE_STORE": Bool(),
        **_EVERY_CHAPTER,
    }, _cross_04),
    Chapter("05_learning_dynamics", {
        "ARCHS": ListOf(Choice(ARCH_NAMES)), "SEEDS": ListOf(Int(0), noun="seed", what="network seeds"),
        "SEED": Int(0, "the seed looked at closely"), "TASK": Choice(TASK_NAMES),
        "AFTER_SOLVE": Int(0, "steps of training after the task is solved"),
        "N_CHECKPOINTS": Int(2, "checkpoints searched per run", special=((0, "every checkpoint"),)),
        "WARM_STEPS": Int(1, "the cap of a warm-started search", special=((0, "the fresh search's cap"),)),
        "COLD_CHECK": Int(0, "checkpoints searched again from scratch; 0: skip"),
        "USE_STORE": Bool(),
        **_EVERY_CHAPTER,
    }, _cross_05),
    Chapter("06_model_alignment_search", {
        "NETWORKS": ListOf(Network(), min_items=2, noun="network", what="arch:seed, e.g. gru:0,lstm:0"),
        "N_UNITS": Int(1, "dims of each network's aligned subspace"),
        "UNITS": ListOf(Int(1, "dims"), unique=False, noun="size", what="subspace sizes"),
        "MAX_STEPS": Int(1, _STEPS), "SWEEP_STEPS": Int(1, _STEPS), "SWEEP_ZSCORED": Bool(),
        "CROSS_TASK": Choice(TASK_NAMES, empty="no cross-task network"),
        "SEED": Int(0, "the pairs' and the alignments' seed"), "USE_STORE": Bool(),
        **_EVERY_CHAPTER,
    }, _cross_06),
    Chapter("07_your_own_model", {
        "OWN_STEPS": Int(1, "training steps"), "HF_FAMILY": Choice(HF_FAMILIES),
        "HF_LAYER": Int(-HF_BLOCKS, f"a block of the chapter's {HF_BLOCKS}-block model; -1 is the last", high=HF_BLOCKS - 1),
        "HF_STEPS": Int(1, "training steps"), "D_MODEL": Int(1, "the width of both networks"),
        "LR": Float(0.0, False, what="the learning rate"), "N_UNITS": Int(1, "dims of each aligned subspace"),
        "DAS_STEPS": Int(1, "search steps"), "HF_DAS_STEPS": Int(1, "search steps"),
        "N_TRAIN": Int(SEARCH_BATCH, f"training pairs: at least one batch of {SEARCH_BATCH}"),
        "MAS_STEPS": Int(1, "search steps"), "BOOK_NETWORK": Network(empty="skips MAS"),
        "SEED": Int(0, "weights, data and pairs"), "USE_STORE": Bool(),
        **_EVERY_CHAPTER,
    }, _cross_07),
    Chapter("08_explorer", {
        "ARCH": Choice(ARCH_NAMES), "TASK": Choice(TASK_NAMES), "SEED": Int(0, "the network's and the search's seed"),
        "PROGRAM": Choice(PROGRAM_NAMES), "VARIABLE": Choice(VARIABLE_NAMES), "USE_STORE": Bool(),
        **_EVERY_CHAPTER,
    }, _cross_08),
    # symlib.analyses.compare.compare_cell, a sweep's function (its defaults come from its signature)
    Chapter("compare_cell", {
        "arch": Choice(ARCH_NAMES), "task": Choice(TASK_NAMES), "program": Choice(PROGRAM_NAMES),
        "variable": Choice(VARIABLE_NAMES), "seed": Int(0, "the network's and the pairs' seed"),
        "site": Text("a site of the architecture; empty: its default"),
        "n_units": Int(1, "dims of each aligned block"), "max_steps": Int(1, _STEPS),
        "n_train": Int(SEARCH_BATCH, f"training pairs: at least one batch of {SEARCH_BATCH}"),
        "n_val": Int(1, "validation pairs"), "n_test": Int(1, "test pairs"),
        "n_test_heldout": Int(0, "test pairs on held-out counts; 0: none"),
        "train_steps": Int(0, "the network's training cap; 0: the book's"),
        "controls": ListOf(Choice(CONTROL_NAMES), min_items=0, what="control names"),
        "device": Device(), "smoke": Bool("the test suite's tiny size"),
    }, _cross_compare, smoke="smoke", smoke_env=False),
)}


# ---- running the checks -----------------------------------------------------------------

def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _message(name: str, value: Any, reason: str) -> str:
    return f"{name}={_show(value)} is not allowed: {reason}"


def chapter(name: str | Chapter) -> Chapter:
    """The ``Chapter`` called ``name`` (a notebook's stem, or ``compare_cell``)."""
    if isinstance(name, Chapter):
        return name
    if name not in CHAPTERS:
        raise KeyError(f"no parameter description called {name!r}; known: {', '.join(CHAPTERS)}")
    return CHAPTERS[name]


def evaluate(name: str | Chapter, values: dict, local: bool = True, base: str | Path | None = None) -> tuple[dict, list[str]]:
    """Check ``values`` (every parameter of the chapter) against its rules and cross-checks.

    Returns (the values as the chapter uses them, one message per parameter not allowed). Values
    of names the chapter does not describe are passed through unchecked. local: the work runs on
    this machine (DEVICE cuda needs a CUDA device here); base: the folder relative paths are
    read from (None: the current one).
    """
    ch = chapter(name)
    missing = [n for n in ch.rules if n not in values]
    if missing:
        raise KeyError(f"{ch.name}: no value for {', '.join(missing)}")
    ctx = Context(local=local, base=Path(base) if base is not None else None)
    parsed, msgs = dict(values), []
    for n, rule in ch.rules.items():
        try:
            parsed[n] = rule.check(values[n], ctx)
        except _Bad as e:
            msgs.append(_message(n, values[n], str(e)))
    if msgs or ch.cross is None:
        return parsed, msgs
    smoke = bool(parsed.get(ch.smoke)) or (ch.smoke_env and os.environ.get("SYMLIB_SMOKE", "") == "1")
    ctx = Context(smoke=smoke, local=local, base=ctx.base)
    done = set()
    for n, reason in ch.cross(parsed, ctx):
        if n not in done:
            done.add(n)
            msgs.append(_message(n, values[n], reason))
    return parsed, msgs


def problems(name: str | Chapter, values: dict, local: bool = True, base: str | Path | None = None) -> list[str]:
    """One message per parameter of ``values`` that is not allowed (see ``evaluate``); [] when all are."""
    return evaluate(name, values, local, base)[1]


def raise_problems(msgs: list[str]) -> None:
    """Raise a ``ParamError`` saying ``msgs`` (nothing when empty)."""
    if len(msgs) == 1:
        raise ParamError(msgs[0])
    if msgs:
        raise ParamError(f"{len(msgs)} parameters are not allowed:\n" + "\n".join(f"  - {m}" for m in msgs))


def check(name: str | Chapter, values: dict, local: bool = True, base: str | Path | None = None) -> dict:
    """The values as the chapter uses them (lists parsed, whole numbers as int), or a ``ParamError``
    naming each parameter not allowed, its value and the rule it breaks."""
    parsed, msgs = evaluate(name, values, local, base)
    raise_problems(msgs)
    return parsed


def check_notebook(name: str, namespace: dict) -> dict:
    """A chapter's first code cell: check its parameters as they are in ``namespace`` (its ``globals()``).

    Raises a ``ParamError`` before any work when a value is not allowed. Returns every parameter
    as the chapter uses it (a list parameter parsed into a list, ``NETWORKS`` into (arch, seed)
    pairs); a number given as another type (16.0 for a whole number, 1 for a rate) is set in
    ``namespace`` as the type the chapter expects.
    """
    ch = chapter(name)
    parsed = check(ch, {n: namespace[n] for n in ch.rules})
    for n, rule in ch.rules.items():
        if not rule.is_list and type(parsed[n]) is not type(namespace[n]) and not isinstance(rule, Network):
            namespace[n] = parsed[n]
    return parsed


def notebook_chapter(path: str | Path) -> str | None:
    """The chapter whose parameters a notebook checks (the name it passes to ``check_notebook``), or None."""
    import json
    try:
        nb = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else src
        m = re.search(r"check_notebook\(\s*[\"'](\w+)[\"']", src)
        if m and m.group(1) in CHAPTERS:
            return m.group(1)
    return None

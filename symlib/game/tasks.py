"""The counting tasks (numeric equivalence) and vectorised, seeded trial sampling.

A trial is ``B``, N demo tokens, the trigger ``T``, the response tokens and ``E``;
the rest is padding ``P``. Only the response tokens and the final ``E`` can be
predicted, so only they are scored (the *task mask*).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..utils import check_choice

#: Counts held out of the training data (interpolation test).
HELDOUT_COUNTS: tuple[int, ...] = (4, 9, 14, 17)
#: Counts seen in training.
TRAIN_COUNTS: tuple[int, ...] = tuple(n for n in range(1, 21) if n not in HELDOUT_COUNTS)
#: Counts beyond the trained range [ours].
OUT_OF_RANGE_COUNTS: tuple[int, ...] = tuple(range(21, 31))
#: Named count sets, for evaluation and for users who prefer names.
COUNT_SETS: dict[str, tuple[int, ...]] = {
    "train": TRAIN_COUNTS,
    "heldout": HELDOUT_COUNTS,
    "out_of_range": OUT_OF_RANGE_COUNTS,
    "all": tuple(range(1, 21)),
}

# name -> (demo words, response word, transform of the count in the response phase)
_TASKS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "multiobject": (("D0", "D1", "D2"), "R", "identity"),
    "singleobject": (("D",), "R", "identity"),
    "sameobject": (("D",), "D", "identity"),
    "multiobject_mod4": (("D0", "D1", "D2"), "R", "mod4"),
    "multiobject_round3": (("D0", "D1", "D2"), "R", "round3"),
}
TASK_NAMES: tuple[str, ...] = tuple(_TASKS)


@dataclass
class Trials:
    """A batch of trials.

    tokens: (batch, length) token ids, padded with ``P``.
    task_mask: (batch, length) bool, True on the graded tokens (responses and ``E``).
    counts: (batch,) the demo count N.
    trigger_pos: (batch,) index of ``T``.
    lengths: (batch,) number of non-pad tokens.
    """

    tokens: torch.Tensor
    task_mask: torch.Tensor
    counts: torch.Tensor
    trigger_pos: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, idx) -> "Trials":
        t = Trials(self.tokens[idx], self.task_mask[idx], self.counts[idx], self.trigger_pos[idx], self.lengths[idx])
        # drop columns that are padding in every row
        L = int(t.lengths.max()) if len(t) else 0
        return Trials(t.tokens[:, :L], t.task_mask[:, :L], t.counts, t.trigger_pos, t.lengths)

    def demo_response_mask(self) -> torch.Tensor:
        """(batch, length) bool: the demo and response tokens, the positions where a count is built up or
        read out (not ``B`` at 0, not the trigger ``T``, not the final ``E``, not padding)."""
        idx = torch.arange(self.tokens.shape[1], device=self.tokens.device)[None, :]
        return (idx >= 1) & (idx < (self.lengths - 1)[:, None]) & (idx != self.trigger_pos[:, None])

    def to(self, device) -> "Trials":
        return Trials(*(x.to(device) for x in (self.tokens, self.task_mask, self.counts, self.trigger_pos, self.lengths)))


def used_length(tokens: torch.Tensor, pad: int = 0) -> int:
    """The columns a batch of padded token rows needs: one past the last non-pad token of any row
    (0 for an empty batch). Every task pads with token 0 (``P``)."""
    nz = (tokens != pad).long() * torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
    return int(nz.max()) if nz.numel() else 0


@dataclass(frozen=True)
class Task:
    """One counting task: its vocabulary and how to sample trials.

    Token ids follow the original code: ``P=0, B=1, E=2``, then the other words in
    sorted order. The void token ``U`` is always in the vocabulary (it sorts last, so
    the other ids are those of the original) and appears only when ``unk_p > 0``.
    """

    name: str
    unk_p: float = 0.0
    demo_words: tuple[str, ...] = field(init=False)
    resp_word: str = field(init=False)
    transform: str = field(init=False)
    vocab: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        check_choice("task", self.name, TASK_NAMES)
        if not 0.0 <= self.unk_p < 1.0:
            raise ValueError(f"unk_p must be in [0, 1), got {self.unk_p}")
        demo, resp, transform = _TASKS[self.name]
        words = sorted(set(demo) | {resp, "T", "U"})
        object.__setattr__(self, "demo_words", demo)
        object.__setattr__(self, "resp_word", resp)
        object.__setattr__(self, "transform", transform)
        object.__setattr__(self, "vocab", ("P", "B", "E", *words))

    # ---- token ids -------------------------------------------------------------
    def id(self, word: str) -> int:
        """Return the id of ``word``."""
        try:
            return self.vocab.index(word)
        except ValueError:
            raise ValueError(f"{word!r} is not a word of task {self.name}; its words: {', '.join(self.vocab)}") from None

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def P(self) -> int:
        return 0

    @property
    def B(self) -> int:
        return 1

    @property
    def E(self) -> int:
        return 2

    @property
    def T(self) -> int:
        return self.id("T")

    @property
    def U(self) -> int:
        return self.id("U")

    @property
    def R(self) -> int:
        """Id of the response token (``D`` for SameObject)."""
        return self.id(self.resp_word)

    @property
    def demo_ids(self) -> tuple[int, ...]:
        return tuple(self.id(w) for w in self.demo_words)

    # ---- counts ----------------------------------------------------------------
    def response_count(self, n: torch.Tensor) -> torch.Tensor:
        """Return how many response tokens a demo count ``n`` asks for (the task's transform)."""
        if self.transform == "mod4":
            return n % 4
        if self.transform == "round3":
            return 3 * torch.div(n + 1, 3, rounding_mode="floor")  # nearest multiple of 3 (no ties for ints)
        return n

    def max_len(self, max_count: int) -> int:
        """Longest trial (without void tokens) for counts up to ``max_count``."""
        r = int(self.response_count(torch.arange(max_count + 1)).max())
        return max_count + r + 3

    # ---- sampling ----------------------------------------------------------------
    def sample(
        self,
        n_trials: int,
        counts: Sequence[int] | str = "train",
        generator: torch.Generator | None = None,
        unk_p: float | None = None,
    ) -> Trials:
        """Sample ``n_trials`` trials with counts drawn uniformly from ``counts``.

        counts: a sequence of ints or a name from ``COUNT_SETS``.
        unk_p: probability that a demo step emits a void token (default: the task's).
        """
        counts = resolve_counts(counts)
        if n_trials <= 0:
            raise ValueError(f"n_trials must be positive, got {n_trials}")
        unk_p = self.unk_p if unk_p is None else unk_p
        g = generator
        cset = torch.tensor(counts, dtype=torch.long)
        n = cset[torch.randint(len(cset), (n_trials,), generator=g)]
        return self.trials_for_counts(n, generator=g, unk_p=unk_p)

    def trials_for_counts(self, n: torch.Tensor, generator: torch.Generator | None = None, unk_p: float | None = None) -> Trials:
        """Build one trial for each count in ``n`` (shape (batch,)), with random demo tokens."""
        unk_p = self.unk_p if unk_p is None else unk_p
        g = generator
        n = torch.as_tensor(n, dtype=torch.long)
        batch = n.shape[0]
        nmax = int(n.max())
        if unk_p > 0:
            # demo steps: each is void with prob unk_p; the phase ends at the n-th real token.
            M = int(nmax / (1 - unk_p) * 2) + 20
            void = torch.rand(batch, M, generator=g) < unk_p
            void[:, M - nmax:] = False  # guarantees every row completes
            real = torch.cumsum(~void, 1)
            demo_len = (real < n[:, None]).sum(1) + 1
        else:
            M = nmax
            void = torch.zeros(batch, max(M, 1), dtype=torch.bool)
            demo_len = n.clone()
        r = self.response_count(n)
        lengths = demo_len + r + 3
        L = int(lengths.max())
        idx = torch.arange(L)[None, :]
        demo_ids = torch.tensor(self.demo_ids)
        demo_pick = demo_ids[torch.randint(len(demo_ids), (batch, max(M, 1)), generator=g)]
        demo_tok = torch.where(void, torch.full_like(demo_pick, self.U), demo_pick)
        tokens = torch.full((batch, L), self.P, dtype=torch.long)
        tokens[:, 0] = self.B
        k = (idx - 1).clamp(0, demo_tok.shape[1] - 1).expand(batch, L)
        in_demo = (idx >= 1) & (idx <= demo_len[:, None])
        tokens = torch.where(in_demo, torch.gather(demo_tok, 1, k), tokens)
        tpos = demo_len + 1
        tokens = torch.where(idx == tpos[:, None], torch.full_like(tokens, self.T), tokens)
        in_resp = (idx > tpos[:, None]) & (idx <= (tpos + r)[:, None])
        tokens = torch.where(in_resp, torch.full_like(tokens, self.R), tokens)
        epos = tpos + r + 1
        tokens = torch.where(idx == epos[:, None], torch.full_like(tokens, self.E), tokens)
        task_mask = (idx > tpos[:, None]) & (idx <= epos[:, None])
        return Trials(tokens, task_mask, n, tpos, lengths)

    # ---- display -----------------------------------------------------------------
    def decode(self, tokens, keep_pad: bool = False) -> str:
        """Return a trial as words, e.g. ``'B D1 D0 T R R E'`` (padding dropped)."""
        toks = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        return " ".join(self.vocab[t] for t in toks if keep_pad or t != self.P)


def make_task(name: str, unk_p: float = 0.0) -> Task:
    """Return the task called ``name`` (one of ``TASK_NAMES``)."""
    return Task(name, unk_p)


def resolve_counts(counts: Sequence[int] | str) -> tuple[int, ...]:
    """Turn a count-set name or a sequence of counts into a non-empty tuple of positive ints."""
    if isinstance(counts, str):
        check_choice("count set", counts, COUNT_SETS)
        return COUNT_SETS[counts]
    out = tuple(int(c) for c in counts)
    if not out:
        raise ValueError("the count range is empty: give at least one count (e.g. counts='train' or [1, 2, 3])")
    if min(out) < 1:
        raise ValueError(f"counts must be >= 1, got {min(out)}")
    return out

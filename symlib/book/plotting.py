"""Figures for the book: each function takes data and returns a matplotlib Figure."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..paths import figures_dir
from ..game.tasks import Task

_WORD_COLOURS = {"B": "#bbbbbb", "E": "#444444", "T": "#e6a100", "P": "#ffffff", "U": "#d9d9d9", "R": "#2b7bba"}
_DEMO_COLOUR = "#4daf4a"


def _colour(word: str, phase_response: bool) -> str:
    if word in _WORD_COLOURS and not (word == "D" and phase_response):
        return _WORD_COLOURS[word]
    if word.startswith("D"):
        return "#2b7bba" if phase_response else _DEMO_COLOUR
    return "#cccccc"


def draw_sequences(task: Task, rows: Sequence[tuple[str, torch.Tensor, torch.Tensor | None]], title: str = "",
                   mark: Sequence[int | None] | None = None):
    """Draw trials as rows of coloured tokens; task-mask tokens get a thick outline.

    rows: (label, tokens (L,), task_mask (L,) or None). mark: a position per row to flag
    with a red bar (e.g. where an intervention happens).
    """
    L = max(int((t != task.P).sum()) for _, t, _ in rows)
    fig, ax = plt.subplots(figsize=(max(6, 0.42 * L + 2.2), 0.55 * len(rows) + 0.8))
    for r, (label, toks, mask) in enumerate(rows):
        y = len(rows) - 1 - r
        seen_t = False
        for i, t in enumerate(toks.tolist()):
            if t == task.P:
                continue
            w = task.vocab[t]
            g = bool(mask[i]) if mask is not None else False
            ax.add_patch(plt.Rectangle((i, y + 0.1), 0.92, 0.8, facecolor=_colour(w, seen_t), edgecolor="black", linewidth=2.2 if g else 0.4))
            ax.text(i + 0.46, y + 0.5, w, ha="center", va="center", fontsize=8, color="white" if w in ("E", "R") or (seen_t and w.startswith("D")) else "black")
            seen_t = seen_t or w == "T"
        ax.text(-0.3, y + 0.5, label, ha="right", va="center", fontsize=9)
        if mark is not None and mark[r] is not None:
            ax.plot([mark[r] + 0.96] * 2, [y + 0.02, y + 0.98], color="red", linewidth=2.5)
    ax.set_xlim(-0.2, L + 0.2)
    ax.set_ylim(0, len(rows))
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def plot_program_trace(task: Task, tokens: torch.Tensor, trace: Mapping[str, torch.Tensor], variables: Sequence[str], title: str = ""):
    """Plot a program's variables after each token of one trial: tokens (L,), trace var -> (L,)."""
    n = int((tokens != task.P).sum())
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * n + 1.5), 3))
    for v in variables:
        ax.step(range(n), trace[v][:n].numpy(), where="mid", label=v, linewidth=2)
    ax.set_xticks(range(n))
    ax.set_xticklabels([task.vocab[t] for t in tokens[:n].tolist()], fontsize=8)
    ax.set_ylabel("value after the token")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def plot_learning_curves(history: Sequence[Mapping], title: str = "", ax=None):
    """Trial accuracy on training, held-out and out-of-range counts against training step."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 3.4))
    steps = [h["step"] for h in history]
    for key, label, style in (("trial_acc_train", "training counts", "-"), ("trial_acc_heldout", "held-out counts (4, 9, 14, 17)", "--"),
                              ("trial_acc_out_of_range", "out of range (21-30)", ":")):
        ax.plot(steps, [h[key] for h in history], style, label=label, linewidth=2)
    ax.set_xlabel("training step")
    ax.set_ylabel("trial accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    if fig is not None:
        fig.tight_layout()
    return fig or ax.figure


def plot_iia_vs_units(curves: Mapping[str, Mapping[int, float]], chance: float | None = None, title: str = ""):
    """Trial IIA against subspace size, one line per label: curves label -> {n_units: iia}."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, pts in curves.items():
        xs = sorted(pts)
        ax.plot(xs, [pts[x] for x in xs], "o-", label=label, linewidth=2)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle=":", label="no swap (chance)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("n_units (dims of the count subspace)")
    ax.set_ylabel("trial IIA")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def plot_iia_bars(table: Mapping[str, Mapping[str, float]], title: str = ""):
    """Grouped bars: table group -> {bar label: iia} (e.g. architecture -> alignment/controls)."""
    groups = list(table)
    labels = list(dict.fromkeys(k for g in groups for k in table[g]))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups) + 2), 3.6))
    w = 0.8 / len(labels)
    cmap = plt.get_cmap("tab10")
    for j, lab in enumerate(labels):
        vals = [table[g].get(lab, np.nan) for g in groups]
        ax.bar(np.arange(len(groups)) + (j - (len(labels) - 1) / 2) * w, vals, w, label=lab,
               color=cmap(j) if not lab.startswith("control") else ["#999999", "#bbbbbb", "#dddddd", "#777777"][j % 4], edgecolor="black", linewidth=0.4)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel("trial IIA")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(frameon=False, fontsize=7, ncol=2, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def plot_number_line(coord: np.ndarray, value: np.ndarray, phase: np.ndarray, title: str = ""):
    """States projected on the learned count direction against the program's count, by phase."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    rng = np.random.default_rng(0)
    for ph, name, c in ((0, "demo phase", "#4daf4a"), (1, "response phase", "#2b7bba")):
        sel = phase == ph
        ax.scatter(value[sel] + rng.uniform(-0.18, 0.18, sel.sum()), coord[sel], s=6, alpha=0.35, color=c, label=name)
        vals = np.unique(value[sel])
        ax.plot(vals, [np.mean(coord[sel][value[sel] == v]) for v in vals], color=c, linewidth=2)
    ax.set_xlabel("program's count (Up-Down)")
    ax.set_ylabel("projection on the count direction")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8, markerscale=3)
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def plot_iia_matrix(rows_values, col_values, M, xlabel="target count N", ylabel="swapped-in count", title="",
                    origin="lower", annotate=False):
    """Heat map of IIA over two quantities (see ``iia.iia_table``), or a source x target matrix.

    ``origin="upper"`` puts the first row at the top (a matrix read like a table);
    ``annotate`` writes each cell's value in it."""
    M = np.asarray(M, dtype=float)
    fig, ax = plt.subplots(figsize=(max(5.8, 1.1 * len(col_values) + 2.5), max(4.4, 0.8 * len(rows_values) + 1.6)))
    im = ax.imshow(M, origin=origin, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    if annotate:
        for i in range(M.shape[0]):
            for j in range(M.shape[1]):
                if not np.isnan(M[i, j]):
                    ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if M[i, j] < 0.6 else "black")
    ax.set_xticks(range(len(col_values)))
    ax.set_xticklabels(col_values, fontsize=7)
    ax.set_yticks(range(len(rows_values)))
    ax.set_yticklabels(rows_values, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, label="trial IIA")
    if title:
        ax.set_title(title, fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def plot_iia_by_value(rows: Mapping[str, np.ndarray], keys: Sequence[tuple[str, str]] = (("source_value", "swapped-in count"),
                                                                                      ("target_count", "target trial's N")),
                      changed_only: bool = True, title: str = ""):
    """IIA broken down by one per-pair quantity at a time, one panel per ``(column, label)`` in ``keys``.

    ``rows``: a search's per-pair rows (``result.rows``: ``correct``, ``changed`` and the keys).
    Each bar is the share of pairs with that value whose counterfactual the network followed
    (on the changed pairs when ``changed_only``), with its 95% Wilson interval; the number of
    pairs stands under each bar, so a thin cell reads as one."""
    from scipy.stats import binomtest
    ok = np.asarray(rows["correct"]).astype(bool)
    keep = np.asarray(rows["changed"]).astype(bool) if changed_only else np.ones_like(ok)
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.4), squeeze=False)
    for ax, (col, label) in zip(axes[0], keys):
        vals = np.asarray(rows[col])[keep]
        hits = ok[keep]
        xs = np.unique(vals)
        n = np.array([(vals == x).sum() for x in xs])
        k = np.array([hits[vals == x].sum() for x in xs])
        ci = np.array([binomtest(int(ki), int(ni)).proportion_ci(method="wilson") for ki, ni in zip(k, n)])
        p = k / n
        ax.bar(xs, p, 0.8, color="#1f5fa8", edgecolor="black", linewidth=0.3)
        ax.errorbar(xs, p, yerr=[p - ci[:, 0], ci[:, 1] - p], fmt="none", ecolor="black", elinewidth=0.8, capsize=1.5)
        for x, ni in zip(xs, n):
            ax.text(x, 1.07, str(ni), ha="center", va="bottom", fontsize=6, color="#555555")
        ax.set_xticks(xs)
        ax.set_xticklabels([str(int(x)) for x in xs], fontsize=7)
        ax.set(xlabel=label, ylim=(0, 1.13), ylabel=("IIA on changed pairs" if changed_only else "IIA") + ", 95% interval")
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title + " (grey: pairs per bar)", fontsize=10, x=0.01, ha="left")
    fig.tight_layout()
    return fig


def figure_path(name: str) -> Path:
    """Where ``save_figure(fig, name)`` writes: ``figures/<name>.png`` (or ``$SYMLIB_FIGURES``)."""
    return figures_dir() / (name if name.endswith(".png") else f"{name}.png")


def save_figure(fig, name: str) -> None:
    """Save ``fig`` at ``figure_path(name)`` (150 dpi). Returns nothing, so a notebook cell that
    ends with it shows the figure and no stray path."""
    fig.savefig(figure_path(name), dpi=150, bbox_inches="tight")

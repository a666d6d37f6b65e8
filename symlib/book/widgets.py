"""An explorer of interchange interventions, for readers to play with (chapter 08; chapter 03, section 8).

``explorer()`` builds an ipywidgets panel: choose a network (any trained run under
``data/runs`` that has a ``latest.pt``, or networks passed in), a program and a variable;
pick a target trial and where to intervene, a source trial and where to read it; see the
program's counterfactual beside what the intervened network answers by itself, and where
the target's state and the intervened state sit on the network's learned number line.

The alignment comes from the results store (``store``): the explorer looks up the search
chapter 03 runs by default (``explorer_config``), so a book that has run chapter 03 opens
the explorer without searching. When the store does not hold it, a button offers the
search ("search now (~N s)"); nothing is searched without being asked.

Everything a slider move does not change is cached: trials per (count, seed), each trial's
states at every position, the network's run without the swap. A move costs the program's
counterfactual, one intervened rollout and the HTML (``Explorer.time_updates`` measures it).

This module is the view (the widgets, the HTML, the number line's drawing); what it shows is
computed in ``symlib.analyses.explain`` (``program_view``, ``network_view``, the number line's
fit), plain functions, so a test (or a browser test) can check what the explorer shows against
the program's own computation.
"""
from __future__ import annotations

import contextlib
import html
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..paths import runs_dir
from ..game.counterfactuals import program_variable_names, value_variable, variable_blocks
from ..game.programs import PROGRAM_NAMES, make_program
from ..game.tasks import Task, make_task
from ..networks.models import SequenceModel
from ..intervene.alignment import AlignmentFunction
from ..intervene.das import DASConfig, DASResult, cached_result, run_das
from ..intervene.store import resolve_store
# what the explorer shows is computed in analyses.explain; explain_pair, program_view and diff_positions
# are re-exported here, where chapter 03 and the tests have found them
from ..analyses.explain import (DEFAULT_VIEW, diff_positions, explain_pair, frozen_alignment, network_view,  # noqa: F401
                                program_view, trial_for, valid_positions, ExplorerNetwork, plural, readout, readout_fit)

#: Slider width: wide enough to drag one step at a time.
SLIDER_WIDTH = "470px"
#: Milliseconds per search step of a width-128 network on a 2-core CPU (benchmarks/README.md), for the button's estimate.
_MS_PER_STEP = {"gru": 32.0, "lstm": 25.0, "transformer": 88.0, "transformer_nope": 88.0}


# ---- the search the explorer reads ---------------------------------------------------------------

def explorer_config(program: str = "up_down", variable: str = "count", seed: int = 0, smoke: bool | None = None,
                    site: str | None = None, task: Task | None = None) -> DASConfig:
    """The search the explorer looks up: chapter 03's default main search (orthogonal, 16 dims, to
    convergence with a cap of 20 000 steps, 10 000 / 1 000 / 1 000 pairs, 500 held-out test pairs;
    its smoke size when ``smoke``), which is also the findings' and the comparison sweeps' budget,
    so the book's own searches are found in the store.

    ``smoke`` None: ``$SYMLIB_SMOKE``. A program's own name for its number variable (Up-Up's
    ``demo_count``) is searched as ``count``, as chapter 04 does (the same pairs and labels).
    """
    from ..utils import smoke_mode
    from ..analyses.compare import COMPARE_SEARCH, SMOKE_SEARCH
    smoke = smoke_mode() if smoke is None else bool(smoke)
    if task is not None and variable == make_program(program, task).number_variable:
        variable = "count"
    cfg = DASConfig(program=program, variable=variable, site=site, seed=int(seed), **COMPARE_SEARCH)
    return replace(cfg, **SMOKE_SEARCH) if smoke else cfg


def stored_alignment(model: SequenceModel, task: Task, cfg: DASConfig, store=True) -> DASResult | None:
    """The search ``cfg`` on ``model`` from the results store, or None when it is not there (nothing is searched)."""
    store = resolve_store(store)
    if store is None:
        return None
    return cached_result(store, store.key(model, task, cfg))


def estimate_search_seconds(model: SequenceModel, cfg: DASConfig) -> float:
    """A rough upper estimate of a search's seconds on a 2-core CPU (the full step budget; early stopping ends sooner)."""
    arch = getattr(getattr(model, "config", None), "arch", None)
    width = model.state_size(model.check_site(cfg.site))
    per_step = _MS_PER_STEP.get(arch, 40.0) * max(width / 128, 0.25) * cfg.n_blocks()
    pairs = 3.0 * (cfg.n_train + cfg.n_val + cfg.n_test + cfg.n_test_heldout) / 12_500
    return 1.0 + pairs + cfg.max_steps * per_step / 1000


def list_runs(root: str | Path | None = None) -> dict[str, Path]:
    """Trained runs under ``root`` (default ``data/runs``) that have a ``latest.pt``: name -> folder."""
    root = runs_dir() if root is None else Path(root)
    if not root.exists():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and (p / "latest.pt").exists()}





















# ---- comparing rows ------------------------------------------------------------------------------



_TOK = ("display:inline-block;min-width:1.8em;padding:1px 3px;margin:1px 0;text-align:center;"
        "font-family:monospace;font-size:13px;border-radius:3px;")
_STYLE = {
    "given": "color:#666;font-style:italic;background:#eef0f3;",
    "own": "font-weight:bold;color:#0b3d91;background:#dcebff;",
    "swap": "background:#ffe58a;",
    "diff": "background:#ffc9c9;color:#a00000;box-shadow:inset 0 0 0 2px #d33;",
    "changed": "border-bottom:3px solid #f08c00;",
    "missing": "color:#bbb;",
}
#: The explorer's style sheet: the token classes of ``tokens_html`` (sent once, with the legend).
CSS = ("<style>.sx-tok{" + _TOK + "}" + "".join(f".sx-{k}{{{v}}}" for k, v in _STYLE.items())
       + ".sx-cut{display:inline-block;width:1em;text-align:center;font-weight:bold;color:#c00;font-family:monospace}"
       + ".sx-rows td{padding:0 8px 0 0;white-space:nowrap;vertical-align:middle}</style>")


def tokens_html(words: list[str], cut: int | None = None, classes: dict[int, list[str]] | None = None, width: int | None = None) -> str:
    """One row of tokens as HTML: a cell per position (``data-pos``), ``|`` after position ``cut``,
    each cell with the CSS classes ``sx-<name>`` that ``classes`` gives it (styled by ``CSS``)."""
    classes = classes or {}
    n = max(len(words), width or 0, max(classes, default=-1) + 1)
    cells = []
    for i in range(n):
        names = classes.get(i, [])
        word = words[i] if i < len(words) else "·"
        if i >= len(words):
            names = names + ["missing"]
        cls = " ".join(["sx-tok"] + [f"sx-{c}" for c in names])
        cells.append(f'<span class="{cls}" data-pos="{i}">{html.escape(word)}</span>')
        if cut is not None and i == cut:
            cells.append('<span class="sx-cut">|</span>')
    return "".join(cells)


# ---- the network's side --------------------------------------------------------------------------







def number_line_svg(fit: dict, target: float, source: float, intervened: float, target_value: int, source_value: int,
                    width: int = 620) -> str:
    """The learned number line as inline SVG: where natural states of each count sit (demo and response
    phase), the target's state before the swap, the source's, and the target's state after the swap."""
    lo = -1.0
    hi = max(20.0, fit["max_value"] + 1.0, target + 1, source + 1, intervened + 1)
    lo = min(lo, target - 1, source - 1, intervened - 1)
    x0, x1 = 110, width - 15
    X = lambda v: x0 + (v - lo) / (hi - lo) * (x1 - x0)
    parts = [f'<svg class="sx-numberline" width="{width}" height="140" xmlns="http://www.w3.org/2000/svg" '
             'style="font-family:sans-serif;font-size:11px">']
    lanes = {0: (22, "#4c78a8", "demo states"), 1: (46, "#e45756", "response states")}
    for ph, (y, colour, label) in lanes.items():
        parts.append(f'<text x="4" y="{y + 4}" fill="{colour}">{label}</text>')
        parts.append(f'<line x1="{x0}" x2="{x1}" y1="{y}" y2="{y}" stroke="#eee"/>')
        for (v, p), m in sorted(fit["means"].items()):
            if p != ph:
                continue
            parts.append(f'<line x1="{X(m):.1f}" x2="{X(m):.1f}" y1="{y - 6}" y2="{y + 6}" stroke="{colour}" stroke-width="2"/>')
            if v % 5 == 0 or v in (target_value, source_value):
                parts.append(f'<text x="{X(m):.1f}" y="{y - 8}" text-anchor="middle" fill="{colour}">{v}</text>')
    y = 78
    parts.append(f'<text x="4" y="{y + 4}" fill="#333">this pair</text>')
    parts.append(f'<line x1="{x0}" x2="{x1}" y1="{y}" y2="{y}" stroke="#eee"/>')
    if abs(X(intervened) - X(target)) > 8:
        parts.append(f'<line x1="{X(target):.1f}" x2="{X(intervened):.1f}" y1="{y}" y2="{y}" stroke="#999" '
                     'stroke-dasharray="3,2" stroke-width="1.5"/>')
    parts.append(f'<circle class="sx-target" cx="{X(target):.1f}" cy="{y}" r="6" fill="white" stroke="#333" stroke-width="2">'
                 f'<title>target before the swap: {target:.2f}</title></circle>')
    parts.append(f'<path class="sx-source" d="M {X(source):.1f} {y - 14} l 5 8 l -10 0 z" fill="#2f9e44">'
                 f'<title>source: {source:.2f}</title></path>')
    parts.append(f'<circle class="sx-intervened" cx="{X(intervened):.1f}" cy="{y}" r="4" fill="#d6336c">'
                 f'<title>target after the swap: {intervened:.2f}</title></circle>')
    ya = 100
    parts.append(f'<line x1="{x0}" x2="{x1}" y1="{ya}" y2="{ya}" stroke="#333"/>')
    for v in range(math.ceil(lo), math.floor(hi) + 1):
        tick = 5 if v % 5 == 0 else 2
        parts.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{ya}" y2="{ya + tick}" stroke="#333"/>')
        if v % 5 == 0:
            parts.append(f'<text x="{X(v):.1f}" y="{ya + 16}" text-anchor="middle">{v}</text>')
    parts.append(f'<text x="4" y="{ya + 16}" fill="#333">read-out</text>')
    parts.append(f'<text x="{x1}" y="136" text-anchor="end" fill="#666">count read from the aligned subspace '
                 f'(fit on half the natural trials; r = {fit["r"]:.3f} on the other half)</text>')
    parts.append("</svg>")
    legend = ('<div style="font-size:12px;color:#444">○ target before the swap ({:.1f}) &nbsp; '
              '<span style="color:#2f9e44">▲</span> source ({:.1f}) &nbsp; '
              '<span style="color:#d6336c">●</span> target after the swap ({:.1f})</div>').format(target, source, intervened)
    return "".join(parts) + legend


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread for the duration. A view is a batch of one: threads buy nothing there, and on a
    busy 2-core machine a second thread waiting for work took turns from the first (measured on a width-128
    GRU with another process running: a slider move 300-500 ms with 2 threads, 8-20 ms with one)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)










# ---- the explorer --------------------------------------------------------------------------------

_LEGEND = (CSS + '<div class="sx-legend" style="font-size:12px;color:#444;margin:4px 0">'
           '<span class="sx-tok sx-swap">D1</span> where the swap happens &nbsp; '
           '<span class="sx-tok sx-own">R</span> the network\'s own greedy output &nbsp; '
           '<span class="sx-tok sx-given">D2</span> given to the network (the program\'s tokens) &nbsp; '
           '<span class="sx-tok sx-own sx-diff">E</span> network and program differ &nbsp; '
           '<span class="sx-tok sx-own sx-changed">R</span> the swap changed the network\'s own output'
           '</div>')


class Explorer:
    """The explorer's state and widgets (``widget``); displays as its widget.

    ``view()`` returns what the panel shows for the current sliders (words, marks, text);
    ``update()`` recomputes and redraws it; ``time_updates()`` measures slider moves.
    """

    def __init__(self, networks: dict | None = None, network: str | None = None, program: str = "up_down",
                 variable: str = "count", alignment: AlignmentFunction | None = None, site: str | None = None,
                 store=True, seed: int = 0, smoke: bool | None = None, include_runs: bool = True, max_count: int = 20,
                 view: dict | None = None, natural_trials: int = 200, runs_root: str | Path | None = None):
        import ipywidgets as W

        self.W = W
        self.site, self.seed, self.smoke, self.max_count = site, int(seed), smoke, int(max_count)
        self.natural_trials = int(natural_trials)
        self.store = resolve_store(store)
        self._given: dict = {}
        for name, value in (networks or {}).items():
            model, task = value
            self._given[name] = ExplorerNetwork(name, model, task if isinstance(task, Task) else make_task(task))
        self._runs = list_runs(runs_root) if include_runs else {}
        self._nets: dict[str, ExplorerNetwork] = dict(self._given)
        names = list(self._given) + [n for n in self._runs if n not in self._given]
        if not names:
            raise ValueError("the explorer has no network to show: train one (notebook 02 or symlib.load_or_train writes "
                             f"{runs_dir()}/<name>/latest.pt) or pass networks={{'name': (model, task)}}")
        network = network or names[0]
        if network not in names:
            raise ValueError(f"no network {network!r}; the explorer has: {', '.join(names)}")
        # alignments given by hand (intervention_explorer), by (network, program, variable)
        self._alignments: dict = {}
        if alignment is not None:
            self._alignments[(network, program, variable)] = alignment
        self._results: dict = {}
        self._fits: dict = {}
        self._frozen_by_id: dict = {}
        self.align: AlignmentFunction | None = None
        self.result: DASResult | None = None
        self.alignment_source = ""
        self.searches = 0
        self.last_view: dict | None = None
        self.update_seconds: list[float] = []
        self._busy = False

        v = {**DEFAULT_VIEW, **(view or {})}
        style = {"description_width": "170px"}
        narrow = {"description_width": "60px"}
        wide = W.Layout(width=SLIDER_WIDTH)
        self.w_network = W.Dropdown(options=names, value=network, description="network", style=narrow, layout=W.Layout(width="400px"))
        self.w_program = W.Dropdown(options=list(PROGRAM_NAMES), value=program, description="program", style=narrow,
                                    layout=W.Layout(width="230px"))
        self.w_variable = W.Dropdown(options=[variable], value=variable, description="variable", style=narrow,
                                     layout=W.Layout(width="230px"))
        self.w_tc = W.IntSlider(value=v["target_count"], min=1, max=self.max_count, description="target N", style=style, layout=wide)
        # positions count the demo and response tokens from 1 (the sliders) or from 0 (program_view, set_view)
        self.w_tpos = W.IntSlider(value=v["target_pos"] + 1, min=1, max=2 * self.max_count, description="target: swap after token",
                                  style=style, layout=wide)
        self.w_sc = W.IntSlider(value=v["source_count"], min=1, max=self.max_count, description="source N", style=style, layout=wide)
        self.w_spos = W.IntSlider(value=v["source_pos"] + 1, min=1, max=2 * self.max_count, description="source: read after token",
                                  style=style, layout=wide)
        self.w_seed = W.IntSlider(value=v.get("seed", self.seed), min=0, max=50, description="demo-token seed", style=style, layout=wide)
        for s in (self.w_tc, self.w_tpos, self.w_sc, self.w_spos, self.w_seed):
            s.add_class("sx-slider")
        self.w_status = W.HTML()
        self.w_status.add_class("sx-status")
        self.w_search = W.Button(description="search now", button_style="warning", icon="search", layout=W.Layout(width="220px"))
        self.w_search.add_class("sx-search")
        self.w_search.on_click(lambda _: self.search())
        self.w_search_out = W.Output()
        self.w_main = W.HTML()
        self.w_main.add_class("sx-main")
        self.w_line = W.HTML()
        self.w_line.add_class("sx-line")
        row = lambda *c: W.HBox(list(c), layout=W.Layout(flex_flow="row wrap"))
        self.widget = W.VBox([
            row(self.w_network, self.w_program, self.w_variable),
            row(self.w_status, self.w_search), self.w_search_out,
            row(W.VBox([self.w_tc, self.w_tpos]), W.VBox([self.w_sc, self.w_spos])),
            self.w_seed, W.HTML(_LEGEND), self.w_main, self.w_line,
        ])
        self.widget.add_class("symlib-explorer")
        self._set_variables(program, variable)
        self.w_network.observe(self._on_choice, names="value")
        self.w_program.observe(self._on_choice, names="value")
        self.w_variable.observe(self._on_choice, names="value")
        for s in (self.w_tc, self.w_tpos, self.w_sc, self.w_spos, self.w_seed):
            s.observe(self._on_slider, names="value")
        self._choose()

    # ---- display ----
    def _repr_mimebundle_(self, **kw):
        return self.widget._repr_mimebundle_(**kw)

    # ---- choices ----
    @property
    def net(self) -> ExplorerNetwork:
        name = self.w_network.value
        if name not in self._nets:
            from ..networks.training import load_run
            path = self._runs[name]
            run = load_run(path, step="best" if (path / "best.pt").exists() else None)
            self._nets[name] = ExplorerNetwork(name, run.model, make_task(run.config.task))
        return self._nets[name]

    def _programs_for(self, task: Task) -> list[str]:
        ok = []
        for p in PROGRAM_NAMES:
            try:
                make_program(p, task)
                ok.append(p)
            except ValueError:
                pass
        return ok

    def _set_variables(self, program: str, variable: str | None = None) -> None:
        names = list(program_variable_names(make_program(program, self.net.task)))
        self._busy = True
        try:
            self.w_variable.options = names
            self.w_variable.value = variable if variable in names else "count"
        finally:
            self._busy = False

    def _on_choice(self, change) -> None:
        if self._busy:
            return
        if change["owner"] is self.w_network:
            progs = self._programs_for(self.net.task)
            self._busy = True
            try:
                self.w_program.options = progs
                if self.w_program.value not in progs:
                    self.w_program.value = progs[0]
            finally:
                self._busy = False
        if change["owner"] in (self.w_network, self.w_program):
            self._set_variables(self.w_program.value, self.w_variable.value)
        self._choose()

    def _frozen(self, align: AlignmentFunction) -> AlignmentFunction:
        """The alignment as the explorer uses it: ``frozen_alignment`` on the network's device, made once."""
        k = id(align)
        if k not in self._frozen_by_id:
            self._frozen_by_id[k] = (align, frozen_alignment(align).to(self.net.model.device))
        return self._frozen_by_id[k][1]

    def config(self) -> DASConfig:
        """The search the explorer looks up for the current network, program and variable."""
        return explorer_config(self.w_program.value, self.w_variable.value, seed=self.seed, smoke=self.smoke,
                               site=self.site, task=self.net.task)

    def _choose(self) -> None:
        """Find the alignment for the current choice (given, cached, or in the store); never searches."""
        net, prog, var = self.net, self.w_program.value, self.w_variable.value
        self.align, self.result = None, None
        given = self._alignments.get((net.name, prog, var))
        cfg = self.config()
        if given is not None:
            self.align, self.alignment_source = self._frozen(given), "given"
            status = "alignment: given to the explorer"
        else:
            key = net.store_key(self.store, cfg) if self.store is not None else repr(cfg)
            res = self._results.get((net.name, key))
            if res is None and self.store is not None:
                res = cached_result(self.store, key)
                if res is not None:
                    self.alignment_source = "store"
            if res is not None:
                self._results[(net.name, key)] = res
                self.result, self.align = res, self._frozen(res.alignment)
            m = res.metrics if res is not None else {}
            if res is None:
                secs = estimate_search_seconds(net.model, cfg)
                status = (f"<b>No stored search</b> of {prog} {var} for {net.name} "
                          f"({cfg.alignment}, {cfg.n_units} dims, {cfg.max_steps} steps, {cfg.n_train} training pairs). "
                          "The program's side is shown; search to see the network's.")
                self.w_search.description = f"search now (~{_round_seconds(secs)} s)"
            else:
                changed = m.get("iia_changed_test")
                status = (f"alignment of {prog} {var} in {net.name} ({cfg.alignment}, {m.get('n_units', cfg.n_units)} dims) "
                          + ("from the results store" if m.get("cached") else "searched here")
                          + f": IIA {m.get('iia_test', float('nan')):.3f} on test pairs"
                          + (f", {changed:.3f} on those the swap changes" if changed is not None else ""))
        self.w_status.value = f'<div style="font-size:12px;max-width:900px;margin-left:4px">{status}</div>'
        self.w_search.layout.display = "none" if self.align is not None else None
        self.update()

    def search(self):
        """Run the explorer's search for the current choice (saved in the store), with progress shown."""
        net, cfg = self.net, self.config()
        self.w_search.disabled = True
        try:
            with self.w_search_out:
                res = run_das(net.model, net.task, cfg, store=self.store if self.store is not None else False, progress=True)
        finally:
            self.w_search.disabled = False
        self.searches += 1
        key = net.store_key(self.store, cfg) if self.store is not None else repr(cfg)
        self._results[(net.name, key)] = res
        self._choose()
        return res

    # ---- the view ----
    def _on_slider(self, change) -> None:
        if self._busy:
            return
        # a position on a trial's last demo token (where it holds its whole count N) stays there when N
        # moves, so moving N changes the value read or overwritten there
        for count, pos in ((self.w_tc, self.w_tpos), (self.w_sc, self.w_spos)):
            if change["owner"] is count and pos.value == change["old"]:
                self._busy = True
                try:
                    pos.max = max(pos.max, change["new"])
                    pos.value = change["new"]
                finally:
                    self._busy = False
        self.update()

    def _clamp_positions(self) -> None:
        task = self.net.task
        self._busy = True
        try:
            for count, pos, role in ((self.w_tc, self.w_tpos, "target"), (self.w_sc, self.w_spos, "source")):
                n = len(valid_positions(trial_for(task, count.value, self.w_seed.value, role).tokens[0], task))
                if pos.max != n:
                    if pos.value > n:
                        pos.value = n
                    pos.max = n
        finally:
            self._busy = False

    def view(self) -> dict:
        """What the panel shows for the current sliders: ``network_view`` for the current choice."""
        site = self.site if self.result is None else self.result.config.site
        return network_view(self.net, self.align, site, self.w_program.value, self.w_variable.value, self.w_tc.value,
                            self.w_tpos.value - 1, self.w_sc.value, self.w_spos.value - 1, self.w_seed.value, line=self._line)

    def _line(self, h_t, h_s, h_new, r) -> dict | None:
        net, prog, var = self.net, self.w_program.value, self.w_variable.value
        p = make_program(prog, net.task)
        blocks = variable_blocks(p, var)
        if not (blocks and blocks[0] == [p.number_variable] and value_variable(p, var) == p.number_variable):
            return None
        key = (net.name, prog, var, id(self.align))
        if key not in self._fits:
            self._fits[key] = readout_fit(net, prog, self.align, self.site, self.natural_trials, self.seed)
        fit = self._fits[key]
        return {"fit": fit, "target": readout(fit, self.align, h_t), "source": readout(fit, self.align, h_s),
                "intervened": readout(fit, self.align, h_new)}

    def render(self, r: dict) -> tuple[str, str]:
        """The main HTML (rows, explanation, verdict) and the number line's HTML for a view."""
        p, sp = r["target_pos"], r["source_pos"]
        label = lambda s: f'<td style="font-size:12px">{s}</td>'
        rows = []
        rows.append(f'<tr class="sx-row-target">{label("target trial")}<td>'
                    f'{tokens_html(r["target_words"], p, {p: ["swap"]})}</td></tr>')
        rows.append(f'<tr class="sx-row-source">{label("source trial")}<td>'
                    f'{tokens_html(r["source_words"], sp, {sp: ["swap"]})}</td></tr>')
        pm = {i: (["own"] if r["program_mask"][i] else ["given"]) for i in range(p + 1, len(r["program_words"]))}
        for i in r.get("diff", []):
            if i < len(r["program_words"]):  # no placeholders where only the network goes on
                pm[i].append("diff")
        rows.append(f'<tr class="sx-row-program">{label("<b>program</b>, swapped")}<td>'
                    f'{tokens_html(r["program_words"], p, pm)}</td></tr>')
        if r["network_words"] is not None:
            nm = {i: (["own"] if own else ["given"]) for i, own in enumerate(r["network_own"]) if i > p}
            for i in r["diff"]:
                nm.setdefault(i, []).append("diff")
            for i in r["changed_by_swap"]:
                nm.setdefault(i, []).append("changed")
            rows.append(f'<tr class="sx-row-network">{label("<b>network</b>, swapped")}<td>'
                        f'{tokens_html(r["network_words"], p, nm)}</td></tr>')
        plain_marks = {i: ["own"] for i in range(int(r["target_trial"].trigger_pos[0]) + 1, len(r["plain_words"]))}
        rows.append(f'<tr class="sx-row-plain" style="opacity:0.75">{label("network, no swap")}<td>'
                    f'{tokens_html(r["plain_words"], p, plain_marks)}</td></tr>')
        table = '<table class="sx-rows" style="border-collapse:collapse;margin:4px 0">' + "".join(rows) + "</table>"
        if r["network_words"] is None:
            verdict = ('<div class="sx-verdict" style="color:#666">No alignment for this network yet: '
                       '<i>search now</i> to see what the intervened network does.</div>')
        elif r["agree"]:
            verdict = ('<div class="sx-verdict" style="color:#2b8a3e;font-weight:bold">network = program: after the swap the network '
                       'answers exactly as the program says.</div>')
        else:
            k = len(r["diff"])
            verdict = (f'<div class="sx-verdict" style="color:#c92a2a;font-weight:bold">network differs from the program at '
                       f'{plural(k, "token")} (marked).</div>')
        own_note = ""
        if r["network_words"] is not None:
            n_own = sum(1 for i, o in enumerate(r["network_own"]) if o and i > p)
            n_given = sum(1 for i, o in enumerate(r["network_own"]) if not o and i > p)
            own_note = (f'<div style="font-size:12px;color:#444">After the <code>|</code> the network row holds '
                        f'{plural(n_own, "token")} of its own greedy output'
                        + (f" and {n_given} given to it from the program's counterfactual (demo tokens and T are not predicted)"
                           if n_given else "") + ".</div>")
        text = f'<div class="sx-text" style="max-width:900px;font-size:13px;margin:4px 0">{r["text"]}</div>'
        main = f'<div class="sx-view">{text}{table}{verdict}{own_note}</div>'
        line = ""
        if r.get("line"):
            L = r["line"]
            line = number_line_svg(L["fit"], L["target"], L["source"], L["intervened"], r["target_value"], r["source_value"])
        elif r["network_words"] is not None:
            line = '<div style="font-size:12px;color:#666">(the number line is drawn for count swaps)</div>'
        return main, line

    def update(self) -> dict:
        """Recompute the view for the current sliders and redraw; returns the view."""
        t0 = time.perf_counter()
        self._clamp_positions()
        with one_thread():
            r = self.view()
        main, line = self.render(r)
        self.w_main.value = main
        self.w_line.value = line
        self.last_view = r
        self.update_seconds.append(time.perf_counter() - t0)
        return r

    def set_view(self, target_count: int | None = None, target_pos: int | None = None, source_count: int | None = None,
                 source_pos: int | None = None, seed: int | None = None) -> dict:
        """Set several sliders at once (one redraw; positions from 0, as ``program_view``); returns the view."""
        self._busy = True
        try:
            for w, v in ((self.w_tc, target_count), (self.w_sc, source_count), (self.w_seed, seed)):
                if v is not None:
                    w.value = int(v)
            for w, v in ((self.w_tpos, target_pos), (self.w_spos, source_pos)):
                if v is not None:
                    w.max = max(w.max, int(v) + 1)
                    w.value = int(v) + 1
        finally:
            self._busy = False
        return self.update()

    def time_updates(self, moves: list[tuple[str, int]] | None = None) -> dict:
        """Move sliders programmatically and time each redraw (the observer's whole work): median and max in ms.
        ``moves``: (slider name: target_count, target_pos, source_count, source_pos, seed; slider value) pairs;
        the default moves each slider a few steps and back, then restores the view."""
        sliders = {"target_count": self.w_tc, "target_pos": self.w_tpos, "source_count": self.w_sc,
                   "source_pos": self.w_spos, "seed": self.w_seed}
        start = {k: s.value for k, s in sliders.items()}
        if moves is None:
            moves = [("source_count", 8), ("source_count", 7), ("source_pos", 5), ("target_pos", 6), ("target_pos", 9),
                     ("target_count", 7), ("target_count", 8), ("seed", 1), ("source_count", 12), ("source_pos", 2)]
        times = []
        for name, value in moves:
            n = len(self.update_seconds)
            sliders[name].value = value
            if len(self.update_seconds) > n:
                times.append(self.update_seconds[-1] * 1000)
        self.set_view(**{k: v - 1 if k.endswith("_pos") else v for k, v in start.items()})
        return {"median_ms": statistics.median(times) if times else None, "max_ms": max(times) if times else None, "n": len(times)}


def _round_seconds(s: float) -> int:
    return int(max(5, round(s / 5) * 5)) if s >= 5 else max(1, int(round(s)))


def explorer(networks: dict | None = None, network: str | None = None, program: str = "up_down", variable: str = "count",
             alignment: AlignmentFunction | None = None, site: str | None = None, store=True, seed: int = 0,
             smoke: bool | None = None, include_runs: bool = True, max_count: int = 20, view: dict | None = None,
             natural_trials: int = 200, runs_root: str | Path | None = None) -> Explorer:
    """The intervention explorer (see the module docstring); display the returned object.

    networks: name -> (model, task) shown beside every trained run under ``data/runs``
    (``include_runs``; ``runs_root`` another folder); network: the one shown first (a name);
    alignment: an alignment for the first network, program and variable (else the store's);
    store: a ``ResultsStore``, True (``data/das_store``) or False; seed: the search's seed
    (``explorer_config``); smoke: its smoke size (None: ``$SYMLIB_SMOKE``); view: slider values
    to open on (``DEFAULT_VIEW``'s keys).
    """
    return Explorer(networks, network, program, variable, alignment, site, store, seed, smoke, include_runs, max_count,
                    view, natural_trials, runs_root)




def intervention_explorer(model: SequenceModel, task: Task, align: AlignmentFunction, program: str = "up_down",
                          variable: str = "count", site: str | None = None, max_count: int = 20) -> Explorer:
    """The explorer on one given network and alignment (chapter 03): the other trained runs are listed too."""
    return explorer({"this network": (model, task)}, "this network", program, variable, alignment=align, site=site,
                    max_count=max_count)

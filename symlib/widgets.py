"""ipywidgets builders for exploring interventions interactively."""
from __future__ import annotations

import torch

from .alignment import AlignmentFunction
from .counterfactuals import pairs_from_trials
from .iia import network_rollout
from .models import SequenceModel
from .programs import make_program
from .tasks import Task


def valid_positions(trial_tokens: torch.Tensor, task: Task) -> list[int]:
    """Positions of demo and response tokens in one trial (where interventions may happen)."""
    toks = trial_tokens.tolist()
    return [i for i, t in enumerate(toks) if t not in (task.P, task.B, task.T, task.E)]


def explain_pair(model: SequenceModel, task: Task, align: AlignmentFunction, program: str, variable: str,
                 target_count: int, target_pos: int, source_count: int, source_pos: int, seed: int = 0,
                 site: str | None = None) -> dict:
    """Build one hand-picked pair and return the program's and the network's counterfactuals as words.

    Positions index the demo and response tokens of each trial (0 = the first demo token).
    """
    prog = make_program(program, task)
    g = torch.Generator().manual_seed(seed)
    tgt = task.trials_for_counts(torch.tensor([target_count]), g, unk_p=0.0)
    src = task.trials_for_counts(torch.tensor([source_count]), g, unk_p=0.0)
    tp, sp = valid_positions(tgt.tokens[0], task), valid_positions(src.tokens[0], task)
    pos = torch.tensor([tp[min(target_pos, len(tp) - 1)]])
    spos = torch.tensor([sp[min(source_pos, len(sp) - 1)]])
    pair = pairs_from_trials(prog, variable, tgt, pos, src, spos, None, g)
    net = network_rollout(model, align, pair, site)
    words = lambda t: task.decode(t)
    p = int(pos[0])
    prog_words, net_words = words(pair.tokens[0]).split(), words(net[0]).split()
    return {
        "target": words(tgt.tokens[0]), "source": words(src.tokens[0]),
        "target_pos": p, "source_pos": int(spos[0]),
        "source_value": int(pair.source_value[0]), "target_value": int(pair.target_value[0]),
        "program": " ".join(prog_words[: p + 1]) + " | " + " ".join(prog_words[p + 1:]),
        "network": " ".join(net_words[: p + 1]) + " | " + " ".join(net_words[p + 1:]),
        "agree": prog_words == net_words,
    }


def intervention_explorer(model: SequenceModel, task: Task, align: AlignmentFunction, program: str = "up_down",
                          variable: str = "count", site: str | None = None, max_count: int = 20):
    """A small explorer: pick a target count, a position, a source count and position; see the
    program's counterfactual beside the network's own rollout after the swap."""
    import ipywidgets as W

    style = {"description_width": "140px"}
    tc = W.IntSlider(value=6, min=1, max=max_count, description="target count N", style=style)
    tpos = W.IntSlider(value=8, min=0, max=2 * max_count, description="target position", style=style)
    sc = W.IntSlider(value=3, min=1, max=max_count, description="source count", style=style)
    spos = W.IntSlider(value=2, min=0, max=2 * max_count, description="source position", style=style)
    seed = W.IntSlider(value=0, min=0, max=20, description="demo-token seed", style=style)
    out = W.HTML()

    def update(*_):
        tpos.max = 2 * tc.value - 1
        spos.max = 2 * sc.value - 1
        r = explain_pair(model, task, align, program, variable, tc.value, tpos.value, sc.value, spos.value, seed.value, site)
        verdict = "<b style='color:green'>network = program</b>" if r["agree"] else "<b style='color:#c00'>network differs</b>"
        out.value = (
            f"<pre>target  {r['target']}\nsource  {r['source']}\n"
            f"swap {variable}: source value {r['source_value']} (target had {r['target_value']}) after target token {r['target_pos']}\n\n"
            f"program {r['program']}\nnetwork {r['network']}</pre>{verdict}")

    for w in (tc, tpos, sc, spos, seed):
        w.observe(update, names="value")
    update()
    return W.VBox([W.HBox([W.VBox([tc, tpos]), W.VBox([sc, spos, seed])]), out])

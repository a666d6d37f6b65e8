"""symlib: symbol-like number variables in small sequence models.

The package in layers, each built only on the ones above it in this list (no import cycles;
``tests/test_layout.py`` holds it to that):

- ``symlib.paths``, ``symlib.utils``: where things live; seeding, atomic writes, checks.
- ``symlib.game``: the counting game, its programs and counterfactual pairs.
- ``symlib.networks``: GRU, LSTM, Transformer, your own module, HuggingFace models; training.
- ``symlib.intervene``: alignment functions, IIA, the search engine, DAS, MAS, controls, the store.
- ``symlib.analyses``: findings over seeds, program comparison, learning dynamics, similarity,
  statistics, every chapter's parameters, provenance.
- ``symlib.book``: the tooling that runs, sweeps, draws and renders the book.

Two levels of use. The low level: a network's sites and ``run_with_state`` (run with a state
replaced), an alignment function's ``interchange``, ``evaluate_alignment`` on given pairs.
The recipes, built on it: ``run_das``, ``run_das_with_controls``, ``run_mas``,
``run_stitching``, ``subspace_sweep``, the findings table, program comparison cells and IIA
over training. The names below are the ones notebooks and user code need; everything else is
in its module.

``python -m symlib <command>`` runs the book's commands (``python -m symlib --help``).
"""
from __future__ import annotations


from .paths import REPO_ROOT, data_dir, figures_dir, runs_dir
from .utils import resolve_device, seed_everything, smoke_mode, write_results
# the game
from .game.counterfactuals import VARIABLE_NAMES, CounterfactualPairs, make_pairs, make_splits, pairs_from_trials
from .game.programs import PROGRAM_NAMES, counterfactual, make_program
from .game.tasks import COUNT_SETS, HELDOUT_COUNTS, OUT_OF_RANGE_COUNTS, TASK_NAMES, TRAIN_COUNTS, Task, Trials, make_task
# the networks
from .networks.hooked import HookedModel, wrap_model
from .networks.models import ARCH_NAMES, ModelConfig, SequenceModel, build_model, free_run, greedy_rollout, make_model
from .networks.training import RunResult, TrainConfig, checkpoint_steps, evaluate, load_checkpoint, load_or_train, load_run, train
# interventions: the low level, then the recipes
from .intervene.alignment import ALIGNMENT_NAMES, AlignmentFunction, make_alignment
from .intervene.controls import CONTROL_NAMES, run_das_with_controls
from .intervene.das import DASConfig, DASResult, load_alignment, run_das, run_das_batch, save_alignment, subspace_sweep
from .intervene.iia import evaluate_alignment, iia_table, network_rollout
from .intervene.mas import MASConfig, MASNetwork, MASResult, run_mas, run_stitching
from .intervene.search import SearchResult
from .intervene.store import ResultsStore
# analyses
from .analyses import params
from .analyses.analysis import natural_states, number_line
from .analyses.findings import findings_table, full_run, summarise_findings
from .analyses.similarity import linear_cka, rsa
from .analyses.stats import format_ci, mean_ci

__version__ = "0.1.0"


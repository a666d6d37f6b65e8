"""symlib: symbol-like number variables in small sequence models.

Tasks and programs (``tasks``, ``programs``, ``counterfactuals``), networks (``models``,
``hooked`` for your own), training (``training``; several seeds as one network: ``batched``), alignment functions (``alignment``),
the search loop (``das``), measuring IIA (``iia``), controls (``controls``), the results
store (``store``), findings over seeds (``findings``, ``stats``), analyses (``analysis``),
comparisons of programs (``compare``, ``interventions``), sweeps (``sweep``), learning
dynamics (``dynamics``), Model Alignment Search across networks (``mas``) and the similarity
baselines (``similarity``: linear CKA, RSA),
figures and widgets (``plotting``, ``widgets``), paths and seeding (``paths``, ``utils``), and every
chapter's parameters with their checks and smoke sizes (``params``).
The names below are the ones notebooks use most.
"""
from __future__ import annotations

import os

from .alignment import ALIGNMENT_NAMES, AlignmentFunction, make_alignment
from .analysis import natural_states, number_line
from .controls import CONTROL_NAMES, run_das_with_controls
from .counterfactuals import VARIABLE_NAMES, CounterfactualPairs, make_pairs, make_splits, pairs_from_trials
from .das import DASConfig, DASResult, load_alignment, run_das, run_das_batch, save_alignment, subspace_sweep
from .iia import evaluate_alignment, iia_table, network_rollout
from .mas import MASConfig, MASNetwork, MASResult, run_mas, run_stitching
from .similarity import linear_cka, rsa
from .stats import format_ci, mean_ci
from .store import ResultsStore
from .hooked import HookedModel, wrap_model
from .models import ARCH_NAMES, ModelConfig, SequenceModel, build_model, free_run, greedy_rollout, make_model
from .paths import REPO_ROOT, data_dir, figures_dir, runs_dir
from .programs import PROGRAM_NAMES, counterfactual, make_program
from .tasks import COUNT_SETS, HELDOUT_COUNTS, OUT_OF_RANGE_COUNTS, TASK_NAMES, TRAIN_COUNTS, Task, Trials, make_task
from .training import RunResult, TrainConfig, checkpoint_steps, evaluate, load_checkpoint, load_or_train, load_run, train
from .utils import resolve_device, seed_everything, write_results
from . import params

__version__ = "0.1.0"


def smoke_mode(flag: bool = False) -> bool:
    """True when a notebook should run at its tiny test size: ``SMOKE`` or ``$SYMLIB_SMOKE=1`` (set by the test suite)."""
    return bool(flag) or os.environ.get("SYMLIB_SMOKE", "") == "1"

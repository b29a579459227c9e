# lit-vae: `make test` and `make demo` set everything up on a fresh clone with Python >= 3.10.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Sample production: SCALE multiplies every sample; JOBS processes share the work (same files for any JOBS).
SCALE ?= 1
JOBS ?= 2
MC := $(PY) -m lit_vae.mc
N = $$(( $(1) * $(SCALE) ))

.PHONY: install test test-gpu test-fast samples lint clean bench bench-sweeps demo

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,mc,sweep,export]"
	touch $(STAMP)

test: install
	$(PY) -m pytest

# On a machine with a CUDA device: fit, predict and decode on the GPU against the CPU (skipped without one).
# TEST_DEVICE=cpu dry-runs these tests' own code on the CPU (run it before spending a lent GPU's time).
TEST_DEVICE ?= cuda
test-gpu: install
	LIT_VAE_TEST_DEVICE=$(TEST_DEVICE) $(PY) -m pytest -m gpu tests/test_gpu.py

# Everything but the tests marked slow.
test-fast: install
	$(PY) -m pytest -m "not slow"

# Regenerates the shipped sample in data/ (seeds fixed here; the files do not depend on JOBS). ttbar and W+jets
# are two runs each (seeds 103 and 109, 104 and 108: made at different times), merged into one sample.
SAMPLE_RUNS := .cache/samples
samples: install
	mkdir -p $(SAMPLE_RUNS)
	$(MC) zgamma --events $(call N,100000) --seed 101 --jobs $(JOBS) --out data/zgamma_bkg.root
	@echo "zgamma_test.root: an independent Zgamma test sample, used for nothing but the headline numbers"
	$(MC) zgamma --events $(call N,25000) --seed 107 --jobs $(JOBS) --out data/zgamma_test.root
	$(MC) hzg --mass 150 --events $(call N,20000) --seed 102 --jobs $(JOBS) --out data/hzg150_sig.root
	$(MC) ttbar --fast --events $(call N,40000) --seed 103 --jobs $(JOBS) --out $(SAMPLE_RUNS)/ttbar_1l_seed103.root
	$(MC) ttbar --fast --events $(call N,40000) --seed 109 --jobs $(JOBS) --out $(SAMPLE_RUNS)/ttbar_1l_seed109.root
	$(MC) merge $(SAMPLE_RUNS)/ttbar_1l_seed103.root $(SAMPLE_RUNS)/ttbar_1l_seed109.root --out data/ttbar_1l.root
	$(MC) wjets --fast --events $(call N,40000) --seed 104 --jobs $(JOBS) --out $(SAMPLE_RUNS)/wjets_1l_seed104.root
	$(MC) wjets --fast --events $(call N,40000) --seed 108 --jobs $(JOBS) --out $(SAMPLE_RUNS)/wjets_1l_seed108.root
	$(MC) merge $(SAMPLE_RUNS)/wjets_1l_seed104.root $(SAMPLE_RUNS)/wjets_1l_seed108.root --out data/wjets_1l.root
	$(MC) c1n2_wh --mass-c1n2 500 --mass-lsp 100 --events $(call N,10000) --seed 105 --jobs $(JOBS) --out data/c1n2_wh_500_100.root
	$(MC) c1n2_wh --mass-c1n2 300 --mass-lsp 75 --events $(call N,10000) --seed 106 --jobs $(JOBS) --out data/c1n2_wh_300_75.root

lint: install
	$(PY) -m ruff check lit_vae tests benchmarks

clean:
	rm -rf $(VENV) .cache .pytest_cache

# The main job on the shipped sample: train the paper's VAE and VAE+D and configs/zgamma/best.yaml (the
# physics setup; DEMO_BEST_EPOCHS, fewer than its config's, to keep the demo near 15 min) on Zgamma, generate,
# score H(150) -> Zgamma with each; train the likelihood VAE in each Wh1Lbb region and score; evaluate
# everything; one report page. The Zgamma baselines are fitted with one seed (each 21-feature Gaussian-mixture
# fit costs about a minute), the Wh1Lbb ones with evaluate's default five.
DEMO ?= runs/demo
DEMO_EPOCHS ?= 30
DEMO_BEST_EPOCHS ?= 10
DEMO_WH_EPOCHS ?= 30
DEMO_EVENTS ?= 100000
DEMO_MAX_EVENTS ?=
DEMO_TRAIN_EVENTS ?=
DEMO_BOOTSTRAP ?= 100
DEMO_ANOMALY_OPTS ?=
# One cache for every run of the demo; the tests' reduced demo trains on a subset (DEMO_TRAIN_EVENTS) and
# skips the anomaly references (DEMO_ANOMALY_OPTS=--no-references).
DATA_OPTS = --data.init_args.cache_dir $(abspath $(DEMO))/.cache \
  $(if $(DEMO_TRAIN_EVENTS),--data.init_args.max_events $(DEMO_TRAIN_EVENTS))
LITVAE := $(abspath $(VENV))/bin/lit-vae
CONFIG := $(abspath configs)
BEST = $$(ls runs/lit-vae/version_0/checkpoints/best-*.ckpt)
LOG = $(1)/runs/lit-vae/version_0/metrics.csv
REGIONS := preselection mid 2-3b

demo: install
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	@for model in vae vae_d best; do \
	  epochs=$(DEMO_EPOCHS); [ $$model = best ] && epochs=$(DEMO_BEST_EPOCHS); \
	  mkdir -p $(DEMO)/zgamma_$$model && cd $(DEMO)/zgamma_$$model && \
	  $(LITVAE) fit --config $(CONFIG)/zgamma/$$model.yaml --trainer.max_epochs $$epochs $(DATA_OPTS) && \
	  $(LITVAE) generate --ckpt_path $(BEST) --n_events $(DEMO_EVENTS) --output ../gen_$$model.parquet && \
	  $(LITVAE) predict --config $(CONFIG)/zgamma/$$model.yaml --ckpt_path $(BEST) $(DATA_OPTS) \
	    --output ../scores_$$model.parquet && cd - >/dev/null || exit 1; \
	done
	@for region in $(REGIONS); do \
	  mkdir -p $(DEMO)/wh1lbb_$$region && cd $(DEMO)/wh1lbb_$$region && \
	  $(LITVAE) fit --config $(CONFIG)/wh1lbb/$$region.yaml --trainer.max_epochs $(DEMO_WH_EPOCHS) $(DATA_OPTS) && \
	  $(LITVAE) predict --config $(CONFIG)/wh1lbb/$$region.yaml --ckpt_path $(BEST) $(DATA_OPTS) \
	    --output ../scores_$$region.parquet && cd - >/dev/null || exit 1; \
	done
	$(LITVAE) evaluate generation --generated $(foreach m,vae vae_d best,$(DEMO)/gen_$(m).parquet) \
	  --labels VAE VAE+D best.yaml --out $(DEMO)/zgamma_generation $(if $(DEMO_MAX_EVENTS),--max-events $(DEMO_MAX_EVENTS)) \
	  --training-log $(foreach m,vae vae_d best,$(call LOG,$(DEMO)/zgamma_$(m)))
	$(LITVAE) evaluate anomaly --scores $(foreach m,vae vae_d best,$(DEMO)/scores_$(m).parquet) \
	  --labels VAE VAE+D best.yaml --out $(DEMO)/zgamma_anomaly --bootstrap $(DEMO_BOOTSTRAP) --baseline-seeds 1 \
	  $(DEMO_ANOMALY_OPTS)
	$(LITVAE) evaluate anomaly --scores $(foreach r,$(REGIONS),$(DEMO)/scores_$(r).parquet) --labels $(REGIONS) \
	  --out $(DEMO)/wh1lbb_anomaly --bootstrap $(DEMO_BOOTSTRAP) $(DEMO_ANOMALY_OPTS) --training-log $(foreach r,$(REGIONS),$(call LOG,$(DEMO)/wh1lbb_$(r)))
	$(LITVAE) evaluate summary --reports $(DEMO)/zgamma_generation $(DEMO)/zgamma_anomaly $(DEMO)/wh1lbb_anomaly \
	  --out $(DEMO) --title "lit-vae demo: VAE, VAE+D and best.yaml on Zgamma, likelihood VAE on Wh1Lbb"

# Measures speed as ratios against same-run references and writes BENCHMARKS.md.
bench: install
	$(PY) benchmarks/run.py $(if $(QUICK),--quick)

# Sweep throughput (Table 1 grid, 1 and 2 workers) and TPE + Hyperband against a reduced grid (~20 min).
bench-sweeps: install
	$(PY) benchmarks/sweeps.py

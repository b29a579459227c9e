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

.PHONY: install test test-fast samples lint clean bench demo

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,mc]"
	touch $(STAMP)

test: install
	$(PY) -m pytest

# Everything but the tests marked slow.
test-fast: install
	$(PY) -m pytest -m "not slow"

# Regenerates the shipped sample in data/ (seeds fixed here; the files do not depend on JOBS).
samples: install
	$(MC) zgamma --events $(call N,100000) --seed 101 --jobs $(JOBS) --out data/zgamma_bkg.root
	$(MC) hzg --mass 150 --events $(call N,20000) --seed 102 --jobs $(JOBS) --out data/hzg150_sig.root
	$(MC) ttbar --fast --events $(call N,40000) --seed 103 --jobs $(JOBS) --out data/ttbar_1l.root
	$(MC) wjets --fast --events $(call N,3000) --seed 104 --jobs $(JOBS) --out data/wjets_1l.root
	$(MC) c1n2_wh --mass-c1n2 500 --mass-lsp 100 --events $(call N,10000) --seed 105 --jobs $(JOBS) --out data/c1n2_wh_500_100.root
	$(MC) c1n2_wh --mass-c1n2 300 --mass-lsp 75 --events $(call N,10000) --seed 106 --jobs $(JOBS) --out data/c1n2_wh_300_75.root

lint: install
	$(PY) -m ruff check lit_vae tests benchmarks

clean:
	rm -rf $(VENV) .cache .pytest_cache

# The main job on the shipped sample: train, generate, score (evaluate + report arrive with `lit-vae evaluate`).
DEMO ?= demo-output
DEMO_EPOCHS ?= 20
LITVAE := $(abspath $(VENV))/bin/lit-vae
CONFIG := $(abspath configs)
BEST = $$(ls runs/lit-vae/version_0/checkpoints/best-*.ckpt)

demo: install
	rm -rf $(DEMO) && mkdir -p $(DEMO)/zgamma_vae $(DEMO)/wh1lbb_preselection
	cd $(DEMO)/zgamma_vae && $(LITVAE) fit --config $(CONFIG)/zgamma/vae.yaml --trainer.max_epochs $(DEMO_EPOCHS)
	cd $(DEMO)/zgamma_vae && $(LITVAE) generate --ckpt_path $(BEST) --n_events 100000 --output ../gen_vae.parquet
	cd $(DEMO)/wh1lbb_preselection && $(LITVAE) fit --config $(CONFIG)/wh1lbb/preselection.yaml --trainer.max_epochs $(DEMO_EPOCHS)
	cd $(DEMO)/wh1lbb_preselection && $(LITVAE) predict --config $(CONFIG)/wh1lbb/preselection.yaml --ckpt_path $(BEST) --output ../scores_preselection.parquet
	@echo "demo outputs in $(DEMO)/: gen_vae.parquet (generated Zgamma events), scores_preselection.parquet (anomaly scores), runs in */runs/"

# Measures speed as ratios against same-run references and writes BENCHMARKS.md.
bench: install
	$(PY) benchmarks/run.py

# Everything a fresh clone needs: `make demo` (the main job) and `make test`.
# Both create .venv and install the project; every pip call is constrained by
# constraints-cpu.txt so that PyTorch stays the CPU build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
CONSTRAINTS := constraints-cpu.txt
comma := ,
EXTRAS ?= cpu,dev
INSTALLED := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

DEMO_DIR ?= data/demo

.PHONY: install browser demo test test-fast lint bench bench-models bench-models-gpu bench-claims bench-adjudication bench-service bench-fingerprints eval-shipped train-demo-models finish-findings train-verifier gpu-wheels clean

$(INSTALLED): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(CONSTRAINTS) --upgrade pip setuptools wheel
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	touch $@

install: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/dxv synth --kind periapical --n 8 --seed 1 --out $(DEMO_DIR)/periapical --preview
	$(BIN)/dxv synth --kind bitewing --n 8 --seed 1 --out $(DEMO_DIR)/bitewing --preview
	$(BIN)/dxv synth --kind panoramic --n 4 --seed 1 --out $(DEMO_DIR)/panoramic --preview
	$(BIN)/dxv inspect $(DEMO_DIR)/panoramic/images/px-s1-00000.dcm
	$(BIN)/dxv data stats $(DEMO_DIR)/panoramic/annotations.json
	$(BIN)/dxv read $(DEMO_DIR)/periapical/images/pa-s1-00000.dcm --overlay $(DEMO_DIR)/read-overlay.png
	$(BIN)/dxv eval models/shipped synthetic:seed=7,periapical=6,bitewing=4,panoramic=2 --out $(DEMO_DIR)/eval
	$(BIN)/dxv claims synth --n 8 --seed 1 --out $(DEMO_DIR)/claims
	$(BIN)/dxv validate $(DEMO_DIR)/claims/CLM-1-00003.json --images $(DEMO_DIR)/claims/images > $(DEMO_DIR)/claims/CLM-1-00003.decision.txt
	head -n 12 $(DEMO_DIR)/claims/CLM-1-00003.decision.txt
	$(BIN)/dxv eval-claims --n 40 --seed 7 --out $(DEMO_DIR)/claims-eval
	rm -f $(DEMO_DIR)/state.db
	DXV_STATE_URL=sqlite:///$(abspath $(DEMO_DIR))/state.db $(BIN)/dxv state init
	DXV_STATE_URL=sqlite:///$(abspath $(DEMO_DIR))/state.db $(BIN)/dxv state seed configs/seed/demo.yaml
	DXV_STATE_URL=sqlite:///$(abspath $(DEMO_DIR))/state.db $(BIN)/dxv adjudicate configs/seed/demo-claim.json > $(DEMO_DIR)/adjudication.txt
	head -n 14 $(DEMO_DIR)/adjudication.txt
	DXV_STATE_URL=sqlite:///$(abspath $(DEMO_DIR))/state.db $(BIN)/dxv audit verify
	$(BIN)/dxv demo-service --out $(DEMO_DIR)/service
	@echo "Previews: $(DEMO_DIR)/{periapical,bitewing,panoramic}/preview.png; detections: $(DEMO_DIR)/read-overlay.png;"
	@echo "evaluation: $(DEMO_DIR)/eval/summary.md; claim decision: $(DEMO_DIR)/claims/CLM-1-00003.decision.txt;"
	@echo "synthetic claims: $(DEMO_DIR)/claims-eval/models/claims_summary.md; adjudication with history: $(DEMO_DIR)/adjudication.txt;"
	@echo "the service on Ray Serve, its decisions with the radiographs and boxes: $(DEMO_DIR)/service/summary.html"

# The browser test drives Debian's chromium with Playwright (Playwright's own browser
# download is not used); installed here when missing (needs root, as in CI).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| (echo "chromium is missing and could not be installed: run 'apt-get install chromium' as root" && exit 1)

test: $(INSTALLED) browser
	$(BIN)/python -m pytest

test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -m "not slow"

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/mypy models datasets training evaluation serving

bench: $(INSTALLED)
	$(BIN)/python -m evaluation.bench_synth
	$(BIN)/python -m evaluation.bench_models --threads 2

bench-models: $(INSTALLED)
	$(BIN)/python -m evaluation.bench_models --threads 2

# On a GPU machine installed with EXTRAS=gpu: images/s at batch 1 and 16 into the model cards.
bench-models-gpu: $(INSTALLED)
	$(BIN)/python -m evaluation.bench_models --gpu --threads 4 --throughput --write-cards

# Validation layer on 300 synthetic claims: the rules alone (image truth), then the whole
# chain with the shipped ONNX models.
bench-claims: $(INSTALLED)
	$(BIN)/dxv eval-claims --oracle --n 300 --seed 2026
	$(BIN)/dxv eval-claims --n 300 --seed 2026 --threads 2

# Rule module: claim lines per second on one core against a SQLite store of 1,000,000
# historical lines (built once under data/bench/).
bench-adjudication: $(INSTALLED)
	taskset -c 0 $(BIN)/python -m evaluation.bench_adjudication

# Recycled radiographs: how far the fingerprints separate the same image altered from
# different images of each kind, and the time of one query.
bench-fingerprints: $(INSTALLED)
	$(BIN)/python -m evaluation.bench_fingerprints

# Held-out synthetic set: 300 images from a seed no training recipe uses.
HELD_OUT := synthetic:seed=2026,periapical=150,bitewing=100,panoramic=50

eval-shipped: $(INSTALLED)
	$(BIN)/dxv eval models/shipped $(HELD_OUT) --out data/eval/shipped

# Retrain the shipped demo models (hours on 2 CPU cores, minutes on a GPU), ship them into
# models/shipped and record their held-out figures in the model cards.
train-demo-models: $(INSTALLED)
	$(BIN)/dxv train configs/train/root-count.yaml
	$(BIN)/dxv train configs/train/tooth-numbering.yaml
	$(BIN)/dxv train configs/train/findings-patches.yaml
	$(BIN)/dxv train configs/train/findings-patches.yaml --set init_from=$$(ls -d data/runs/findings-* | tail -1)/best.pt \
	  --set optim.epochs=6 --set optim.lr=0.0008 --set optim.warmup_iters=100 --set version_label=0.2.1
	$(BIN)/dxv train configs/train/findings-patches-more.yaml \
	  --set init_from=$$(ls -d data/runs/findings-* | tail -1)/export/findings.onnx
	$(BIN)/dxv train configs/train/findings-patches-more.yaml \
	  --set init_from=$$(ls -d data/runs/findings-* | tail -1)/export/findings.onnx \
	  --set optim.epochs=6 --set optim.lr=0.0005 --set optim.warmup_iters=50 --set version_label=0.2.3 \
	  --set "data.sources=[{format: synthetic, counts: {periapical: 1200, bitewing: 700, panoramic: 600}, seed: 14}]"
	$(BIN)/dxv train configs/train/findings-patches-more.yaml \
	  --set init_from=$$(ls -d data/runs/findings-* | tail -1)/export/findings.onnx \
	  --set optim.epochs=6 --set optim.lr=0.0005 --set optim.warmup_iters=50 --set version_label=0.2.4 \
	  --set "data.sources=[{format: synthetic, counts: {periapical: 1200, bitewing: 700, panoramic: 600}, seed: 15}]"
	$(BIN)/dxv train configs/train/findings-patches-more.yaml \
	  --set init_from=$$(ls -d data/runs/findings-* | tail -1)/export/findings.onnx \
	  --set optim.epochs=6 --set optim.lr=0.0005 --set optim.warmup_iters=50 --set version_label=0.2.5 \
	  --set augment.patch_focus_prob=0.7 --set augment.patch_tooth_focus_prob=0.2 \
	  --set "data.sources=[{format: synthetic, counts: {periapical: 1200, bitewing: 700, panoramic: 600}, seed: 16}]"
	$(BIN)/dxv train configs/train/findings-patches-more.yaml \
	  --set init_from=$$(ls -d data/runs/findings-* | tail -1)/export/findings.onnx \
	  --set optim.epochs=6 --set optim.lr=0.0005 --set optim.warmup_iters=50 --set version_label=0.2.6 \
	  --set augment.patch_focus_prob=0.7 --set augment.patch_tooth_focus_prob=0.2 \
	  --set "data.sources=[{format: synthetic, counts: {periapical: 1200, bitewing: 700, panoramic: 600}, seed: 17}]"
	for m in root-count tooth-numbering findings; do $(BIN)/dxv models ship $$(ls -d data/runs/$$m-* | tail -1); done
	$(MAKE) finish-findings FINDINGS_VERSION=0.5.1
	$(MAKE) train-verifier

# The finding verifier learns from the shipped finding detector's own candidates, so it is
# trained again whenever another finding detector is shipped (finish-findings first).
train-verifier: $(INSTALLED)
	$(BIN)/dxv train configs/train/finding-verifier.yaml
	$(BIN)/dxv models ship $$(ls -d data/runs/finding-verifier-* | tail -1)
	$(BIN)/dxv eval models/shipped $(HELD_OUT) --out data/eval/shipped --write-card-metrics --log

# After shipping a finding detector (from the CPU steps above, or from a GPU run's export:
# dxv models ship RUN_DIR): its int8 copy for CPUs, the test-time views with the operating
# thresholds chosen again, and the held-out figures in the cards.
FINDINGS_VERSION ?= 0.5.1
finish-findings: $(INSTALLED)
	$(BIN)/dxv models quantize models/shipped findings --version $(FINDINGS_VERSION) --log \
	  --calibrate-on synthetic:seed=3002,periapical=16,bitewing=8,panoramic=8
	$(BIN)/dxv models redecode models/shipped findings --version $(FINDINGS_VERSION) \
	  --set 'decode.test_time_flip=[periapical, bitewing, panoramic]' \
	  --set 'decode.test_time_scales={periapical: [1.125], bitewing: [1.125], panoramic: [0.85]}' \
	  --set 'decode.test_time_shifts={panoramic: [4]}' --set decode.finding_score=summed \
	  --tune-on synthetic:seed=3001,periapical=100,bitewing=60,panoramic=40
	$(BIN)/dxv eval models/shipped $(HELD_OUT) --out data/eval/shipped --write-card-metrics --log

# Wheels for training on a GPU machine with a PyTorch image but no package index (see
# training/offline-wheels.txt and README "Training on an offline GPU machine").
GPU_PYTHON ?= 3.12
gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
	  --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl -r training/offline-wheels.txt
	du -sh .whl

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache

bench-service: $(INSTALLED)
	$(BIN)/python -m evaluation.bench_service

# Two commands on a fresh machine: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MODEL  ?= assets/demo_model
OUT    ?= demo_out

.PHONY: install test test-all demo demo-model bench clean

install: $(VENV)/.installed

# facenet-pytorch goes in with --no-deps: its last release pins torch<2.3, torchvision<0.18,
# numpy<2 and Pillow<10.3, which would downgrade the whole stack; its code runs on current ones.
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps facenet-pytorch==2.6.0
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow and not gpu" -p no:cacheprovider

test-all: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not gpu"

demo: install
	$(BIN)/python jobs/demo.py --out $(OUT) --model $(MODEL)

# Retrain the committed demo model (about 20-25 minutes on 2 CPU cores).
demo-model: install
	$(BIN)/python jobs/train_demo_model.py --out assets/demo_model --steps 1500

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/bench.py --out bench_out

clean:
	rm -rf demo_out bench_out

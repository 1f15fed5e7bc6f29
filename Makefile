# Two commands on a fresh machine: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MODEL  ?= assets/demo_model
OUT    ?= demo_out
# Evaluation: the embedded synthetic sample by default; EVAL_DATA=<folder of one subfolder per
# person> (e.g. ../shared/datasets/orl_faces) evaluates real faces with an offline-trained model.
EVAL_DATA  ?=
EVAL_OUT   ?= eval_out
EVAL_MODEL ?= $(EVAL_OUT)/face_model
EVAL_STEPS ?= 600
# Cold Diffusion evaluation: blur (default), inpaint or snow.
COLD_DEGRADATION ?= blur
# Interpolation: the model the pairs go through (the embedded demo model by default).
INTERP_MODEL ?= assets/demo_model

.PHONY: install test test-all demo demo-model bench bench-interp bench-cold bench-full-size bench-gpu eval eval-model eval-recognizer eval-augment eval-interp eval-cold eval-enhance eval-wild eval-privacy eval-privacy-scenes clean

install: $(VENV)/.installed

# The stamp holds a hash of the files that decide what is installed, not their times: a fresh
# checkout (new file times, same content) reuses the venv; a changed requirement reinstalls.
INSTALL_INPUTS := requirements.txt requirements-face.txt pyproject.toml
INSTALL_HASH := $(shell $(PYTHON) -c 'import hashlib, sys; print(hashlib.sha256(b"".join(open(f, "rb").read() for f in sys.argv[1:])).hexdigest()[:16])' $(INSTALL_INPUTS))
ifneq ($(INSTALL_HASH),$(shell cat $(VENV)/.installed 2>/dev/null))
.PHONY: $(VENV)/.installed
endif

# facenet-pytorch goes in with --no-deps: its last release pins torch<2.3, torchvision<0.18,
# numpy<2 and Pillow<10.3, which would downgrade the whole stack; its code runs on current ones.
$(VENV)/.installed:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-face.txt
	$(BIN)/pip install --quiet --no-deps facenet-pytorch==2.6.0
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	echo $(INSTALL_HASH) > $@

# The autoscaling tier starts a cluster of its own: it runs after the main suite, never beside it.
test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow and not gpu and not autoscaling" -p no:cacheprovider
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "autoscaling" -p no:cacheprovider

test-all: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not gpu and not autoscaling"
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "autoscaling"

demo: install
	$(BIN)/python jobs/demo.py --out $(OUT) --model $(MODEL)

# Retrain the committed demo model (about 20-25 minutes on 2 CPU cores).
demo-model: install
	$(BIN)/python jobs/train_demo_model.py --out assets/demo_model --steps 1500

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/benchmarks/bench.py --out bench_out

# Pair interpolation: the official code's batch-1 pattern against this pipeline's worker.
bench-interp: install
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/benchmarks/bench_interp.py --out bench_out/interp --model $(INTERP_MODEL)

bench-cold: install
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/benchmarks/bench_cold.py --out bench_out/cold

# Boomerang with the ddpm-celebahq-256 architecture on one GPU against its FLOP bound (README, Benchmark).
bench-gpu: install
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/benchmarks/bench_gpu.py --out bench_out/gpu

# Full-size architectures (ddpm-celebahq-256, ldm-celebahq-256, SD v1.5 at 512; random weights in their hub
# layouts) through every job on CPU: peak worker memory and seconds per UNet forward (about an hour on 2 cores).
bench-full-size: install
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/benchmarks/bench_full_size.py --out bench_out/full_size

# A t grid (0.1 ... 0.9), scored in the same pass, into $(EVAL_OUT)/<set>/report/report.html.
ifeq ($(EVAL_DATA),)
eval: install
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/experiments/eval_grid.py --out $(EVAL_OUT)/grid --face-box full
else
eval: install $(EVAL_MODEL)/train.json
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/experiments/eval_grid.py --out $(EVAL_OUT)/$(notdir $(EVAL_DATA)) --data $(EVAL_DATA) \
		--model $(EVAL_MODEL) --face-box detect
endif

# The small face model for EVAL_DATA: a 32x32 DDPM trained on its "train" split (first 5
# photos per person); the evaluation uses the other photos.
eval-model: $(EVAL_MODEL)/train.json
$(EVAL_MODEL)/train.json:
	@test -n "$(EVAL_DATA)" || (echo "set EVAL_DATA=<labelled face folder>"; exit 2)
	$(MAKE) install
	$(BIN)/python jobs/folder_to_shards.py --data $(EVAL_DATA) --out $(EVAL_OUT)/$(notdir $(EVAL_DATA))-train --split train
	$(BIN)/python jobs/train_demo_model.py --out $(EVAL_MODEL) --data $(EVAL_OUT)/$(notdir $(EVAL_DATA))-train \
		--steps $(EVAL_STEPS)

# How well the offline recognizer separates the people of EVAL_DATA (same vs different person).
eval-recognizer: install
	@test -n "$(EVAL_DATA)" || (echo "set EVAL_DATA=<labelled face folder>"; exit 2)
	$(BIN)/python jobs/experiments/check_recognizer.py --data $(EVAL_DATA) --recognizer dlib --face-box detect \
		--out $(EVAL_OUT)/recognizer-dlib.json
	$(BIN)/python jobs/experiments/check_recognizer.py --data $(EVAL_DATA) --recognizer dlib --face-box detect --resolution 32 \
		--out $(EVAL_OUT)/recognizer-dlib-32px.json

# Classifier accuracy trained on originals vs originals + Boomerang neighbours (paper's Table 2).
ifeq ($(EVAL_DATA),)
eval-augment: install
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/experiments/augmentation_experiment.py --out $(EVAL_OUT)/augment-synthetic
else
eval-augment: install $(EVAL_MODEL)/train.json
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/experiments/augmentation_experiment.py --out $(EVAL_OUT)/augment-$(notdir $(EVAL_DATA)) \
		--data $(EVAL_DATA) --model $(EVAL_MODEL)
endif

# Slerp vs noise injection vs NoiseDiffusion, frame strips side by side and the metric table:
# held-out synthetic faces by default; EVAL_DATA=<folder> interpolates those images instead
# (real photos are natural, out-of-model images for the synthetic-face demo model).
eval-interp: install
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/experiments/eval_interp.py --out $(EVAL_OUT)/interp$(if $(EVAL_DATA),-$(notdir $(EVAL_DATA))) \
		$(if $(EVAL_DATA),--data $(EVAL_DATA)) --model $(INTERP_MODEL)

# Cold Diffusion: train a 32x32 blur restorer on CPU (Ray Train, about 15 minutes on 2 cores; resumable),
# then restoration error against s for Algorithm 1, TACoS and the degraded input.
eval-cold: install
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/experiments/eval_cold.py --out $(EVAL_OUT)/cold --degradation $(COLD_DEGRADATION)

# Fixed t, --privacy-target (dlib only; dlib + structure) and --identity k-same on EVAL_DATA (ORL), judged by every attacker of
# metrics/attack_suite.py (naive, parrot, SEBA-style, reversal, linkability) with the privacy/utility frontier.
eval-privacy: install
	@test -n "$(EVAL_DATA)" || (echo "set EVAL_DATA=<labelled face folder>, e.g. ../shared/datasets/orl_faces"; exit 2)
	$(MAKE) $(EVAL_MODEL)/train.json
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/experiments/eval_privacy.py --data $(EVAL_DATA) --model $(EVAL_MODEL) \
		--out $(EVAL_OUT)/privacy

# The same attackers on faces in scenes: --region faces plain and with --identity k-same, each ORL photo pasted
# at 64-128 px onto a background, probes cut at the true rectangles (faces the detector missed count, clear).
eval-privacy-scenes: install
	@test -n "$(EVAL_DATA)" || (echo "set EVAL_DATA=<labelled face folder>, e.g. ../shared/datasets/orl_faces"; exit 2)
	$(MAKE) $(EVAL_MODEL)/train.json
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/experiments/eval_privacy.py --scenes --data $(EVAL_DATA) --model $(EVAL_MODEL) \
		--out $(EVAL_OUT)/privacy-scenes

# Faces in the wild: --region faces on scenes with ORL (when present) and synthetic faces pasted into
# backgrounds, plus a real photo; detection, re-identification, untouched pixels, seams, faces/s.
WILD_ORL ?= ../shared/datasets/orl_faces
eval-wild: install
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/experiments/eval_wild.py --out $(EVAL_OUT)/wild \
		$(if $(wildcard $(WILD_ORL)),--orl $(WILD_ORL),)

# Resolution enhancement x4 on held-out synthetic faces: bicubic vs Boomerang (one pass, 3
# cascaded passes) with the demo model vs a cold super-resolution restorer trained here (CPU).
eval-enhance: install
	$(BIN)/python jobs/make_demo_shards.py --out $(EVAL_OUT)/enhance/train --shards 4 --per-shard 256 --seed 1234
	$(BIN)/python jobs/make_demo_shards.py --out $(EVAL_OUT)/enhance/held_out --shards 1 --per-shard 64 --seed 4321
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/train_restoration.py --data $(EVAL_OUT)/enhance/train \
		--out $(EVAL_OUT)/enhance/superres --degradation superres --T 3 --resolution 32 --steps 600 --lr 5e-4
	HF_HUB_OFFLINE=1 $(BIN)/python jobs/enhance.py --input $(EVAL_OUT)/enhance/held_out --output $(EVAL_OUT)/enhance/runs \
		--model $(INTERP_MODEL) --sr-restorer $(EVAL_OUT)/enhance/superres/restorer --factor 4 --steps 100

clean:
	rm -rf demo_out bench_out eval_out

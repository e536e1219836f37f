# The two commands of the quick start:
#   make demo   set up a virtualenv and run the main job on the built-in data
#   make test   set up a virtualenv and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Test processes for make test (pytest-xdist); 2 suits the 2-core machines CI runs on.
TEST_WORKERS ?= 2

.PHONY: demo test test-slow setup clean bench-env bench-gpu

$(STAMP): requirements.txt requirements-test.txt requirements-serving.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-test.txt
	$(PY) -m pip install -q --no-deps -r requirements-serving.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) train.py --config configs/quickstart.yaml --model-dir runs/quickstart
	$(PY) evaluate.py --weights runs/quickstart
	$(PY) export.py --weights runs/quickstart --format saved_model --output runs/quickstart/export/saved_model --overwrite
	$(PY) export.py --weights runs/quickstart --format tflite --output runs/quickstart/export/tflite --overwrite \
		--tflite-size 128,128 --tflite-quantization float32,int8

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=15 tests

# The slow checks `make test` leaves out (pytest -m slow): the full precision matrix, the quick
# start's accuracy floor on its full recipe, ...
test-slow: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q --durations=15 -m slow tests

# An environment with the peers the benchmarks compare with (not dependencies): keras-cv 0.9
# (frozen upstream; python -m exfuse_keras.bench.train_step) and keras-hub's SegFormer
# (exfuse_keras/bench/peer_segformer.py; keras-hub pulls the full tensorflow wheel).
bench-env:
	test -x .venv-peer/bin/python || $(PYTHON) -m venv .venv-peer
	.venv-peer/bin/python -m pip install -q tensorflow-cpu==2.21.0 keras==3.15.1 keras-cv==0.9.0 keras-hub==0.32.0 pyyaml numpy pillow scipy tqdm tensorflow-datasets==4.9.10 importlib_resources

# The GPU check (docs/benchmarks.md, "GPU check"): on one GPU, under 8 minutes, one report in
# runs/bench_gpu. Needs a TensorFlow that sees the GPU: pip install -r requirements-gpu.txt in
# place of tensorflow-cpu. On CPU: $(PY) -m exfuse_keras.bench.gpu --dry-run
bench-gpu:
	$(PY) -m exfuse_keras.bench.gpu --output runs/bench_gpu

clean:
	rm -rf $(VENV) .venv-peer runs

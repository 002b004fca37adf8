# Set-up and everyday targets. `make demo` and `make test` work on a fresh machine
# with only the package registries reachable.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
RAG := $(VENV)/bin/rag
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# Portable llama.cpp build: the default targets the host CPU, which advertises AMX
# that these VMs do not allow ("Illegal instruction").
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF
DEMO_INDEX := indexes/demo
DEMO_QUESTION := Ollamaの既定のポート番号は？

.PHONY: setup models demo test bench clean train-checker train-reranker

setup: $(VENV)/.installed models

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip==25.3
	# torch first, from the CPU wheel: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -r requirements.lock
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install llama-cpp-python==0.3.36
	$(PIP) install --no-deps -e .
	# This environment sets PYTHONDONTWRITEBYTECODE; compiled bytecode halves import time.
	$(PY) -m compileall -q -j 0 $(VENV)/lib pipeline > /dev/null || true
	touch $@

models: $(VENV)/.installed
	$(PY) -m pipeline.models prepare

demo: setup
	$(RAG) ingest corpora/demo --index $(DEMO_INDEX)
	$(RAG) ask "$(DEMO_QUESTION)" --index $(DEMO_INDEX) --explain

test: setup
	$(PY) -m pytest -q --nbmake --nbmake-timeout=1800 tests notebooks

# The citation checker's entailment model (pipeline/check/entailment/): CPU, 2 threads, seeded,
# about an hour on a quiet 2-core machine. TRAIN_ARGS="--dry-run" prints counts and the projection only.
train-checker: $(VENV)/.installed
	OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 $(PY) -m pipeline.evaluation.train_checker $(TRAIN_ARGS)

# The reranker `rag ask` uses (pipeline/models/reranker/): the same recipe, question -> passage pairs with
# hard negatives from our own hybrid lists over the QA dev sets (their evaluation indexes are built first).
train-reranker: $(VENV)/.installed
	OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 $(PY) -m pipeline.evaluation.train_checker --task relevance \
		--out pipeline/models/reranker --premise-chars 200 --max-length 160 --epochs 2 --max-minutes 48 $(TRAIN_ARGS)

bench: setup
	$(PY) benchmarks/ingest.py

clean:
	rm -rf $(VENV) indexes/*/

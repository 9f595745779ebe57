#!/usr/bin/env bash
# Build llama.cpp's `llama-tokenize` (the tokenizer oracle of tests/tokenizer/test_tokenizer_llama_cpp.py)
# from the llama.cpp sources vendored in the `llama-cpp-python` source package on PyPI.
#
# The binary goes to a cache outside the repository, one folder per version:
#   ${LMFORGE_CACHE:-$HOME/.cache/lmforge}/llama.cpp-<version>/bin/llama-tokenize
# It is linked statically, so the sources and build tree are deleted afterwards. Nothing is done when the
# binary is already there, so `make setup` can run this every time.
#
#   scripts/build_llama_cpp.sh           build (or find) it and print its path on the last line
#   scripts/build_llama_cpp.sh --path    print where it goes, build nothing (the test reads this)
#
# Needs a C++ compiler; cmake and ninja come from PyPI when the system has none, and pip downloads the
# sdist. Takes about 6 minutes on two busy cores.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
PREFIX="${LMFORGE_CACHE:-$HOME/.cache/lmforge}/llama.cpp-${VERSION}"
BINARY="$PREFIX/bin/llama-tokenize"

if [[ "${1:-}" == "--path" ]]; then
    echo "$BINARY"
    exit 0
fi
if [[ -x "$BINARY" ]]; then
    echo "$BINARY"
    exit 0
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"
command -v c++ >/dev/null || { echo "build_llama_cpp.sh: no C++ compiler (c++) found" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
for tool in cmake ninja; do  # from PyPI into the temporary folder when the system has none
    if ! command -v "$tool" >/dev/null; then
        "$python" -m pip install -q --target "$work/tools" "$tool"
        export PATH="$work/tools/bin:$PATH" PYTHONPATH="$work/tools${PYTHONPATH:+:$PYTHONPATH}"
    fi
done

"$python" -m pip download -q --no-deps --no-binary :all: \
    -d "$work" "llama-cpp-python==${VERSION}"
tar -xzf "$work"/llama_cpp_python-"${VERSION}".tar.gz -C "$work"
src="$work/llama_cpp_python-${VERSION}/vendor/llama.cpp"

cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF >/dev/null
ninja -C "$work/build" -j 2 llama-tokenize

mkdir -p "$PREFIX/bin"
install -m 755 "$work/build/bin/llama-tokenize" "$BINARY.tmp"
mv "$BINARY.tmp" "$BINARY"  # appears only when complete
echo "built llama-tokenize from llama-cpp-python ${VERSION} in $((SECONDS - start)) s" >&2
echo "$BINARY"

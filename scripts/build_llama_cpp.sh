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
# With `--targets "llama-server llama-quantize"` (any llama.cpp targets) it builds those instead, tuned to
# this CPU (GGML_NATIVE=ON, llama.cpp's default threading) as the benchmarks need them, into their own
# folder ${LMFORGE_CACHE:-$HOME/.cache/lmforge}/llama.cpp-<version>-native/bin (printed on the last line;
# with --path too, before --targets or after it). benchmarks/serve.py runs llama-server from there.
#
# Needs a C++ compiler; cmake and ninja come from PyPI when the system has none, and pip downloads the
# sdist. Takes about 6 minutes on two busy cores.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
PREFIX="${LMFORGE_CACHE:-$HOME/.cache/lmforge}/llama.cpp-${VERSION}"
BINARY="$PREFIX/bin/llama-tokenize"

path_only=0
targets=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --path) path_only=1; shift ;;
        --targets) targets="${2:?--targets needs a list of targets}"; shift 2 ;;
        *) echo "build_llama_cpp.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [[ -n "$targets" ]]; then  # benchmark tools: native build, own folder
    PREFIX="${PREFIX}-native"
    missing=""
    for t in $targets; do [[ -x "$PREFIX/bin/$t" ]] || missing="$missing $t"; done
    if [[ $path_only == 1 || -z "$missing" ]]; then
        echo "$PREFIX/bin"
        exit 0
    fi
    targets="$missing"
else
    if [[ $path_only == 1 || -x "$BINARY" ]]; then
        echo "$BINARY"
        exit 0
    fi
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

if [[ -n "$targets" ]]; then
    cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_CURL=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON >/dev/null
    # shellcheck disable=SC2086  # the targets are words
    ninja -C "$work/build" -j 2 $targets
    mkdir -p "$PREFIX/bin"
    for t in $targets; do
        install -m 755 "$work/build/bin/$t" "$PREFIX/bin/$t.tmp"
        mv "$PREFIX/bin/$t.tmp" "$PREFIX/bin/$t"  # appears only when complete
    done
    echo "built$targets (native) from llama-cpp-python ${VERSION} in $((SECONDS - start)) s" >&2
    echo "$PREFIX/bin"
    exit 0
fi

cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=OFF >/dev/null
ninja -C "$work/build" -j 2 llama-tokenize

mkdir -p "$PREFIX/bin"
install -m 755 "$work/build/bin/llama-tokenize" "$BINARY.tmp"
mv "$BINARY.tmp" "$BINARY"  # appears only when complete
echo "built llama-tokenize from llama-cpp-python ${VERSION} in $((SECONDS - start)) s" >&2
echo "$BINARY"

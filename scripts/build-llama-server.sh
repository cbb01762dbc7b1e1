#!/usr/bin/env bash
# The CPU serving engine: llama.cpp's llama-server (OpenAI-compatible, LoRA adapters, router mode
# that loads and unloads model instances at runtime) and llama-quantize, built from the llama.cpp
# sources vendored in the pinned llama-cpp-python sdist on PyPI (the one place this machine's
# package registries carry llama.cpp's source). The sdist's sha256 is pinned below.
#
# Kept outside the repo, keyed by version: ~/.cache/arkor-ops/llama.cpp-<version>/ with
#   bin/llama-server, bin/llama-quantize   the engine and the GGUF quantizer
#   convert_hf_to_gguf.py, convert_lora_to_gguf.py, conversion/, gguf-py/   llama.cpp's
#                                         converters and the gguf package they were written with
# A no-op when complete (about 15 minutes on 2 cores the first time). Prints the directory.
#   usage: scripts/build-llama-server.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
PY=${PYTHON:-python3}
dest="${XDG_CACHE_HOME:-$HOME/.cache}/arkor-ops/llama.cpp-$VERSION"
if [ -f "$dest/.arkor-complete" ]; then
  echo "$dest"
  exit 0
fi
echo "==> building llama-server $VERSION into $dest (once)" >&2
work=$(mktemp -d "${TMPDIR:-/tmp}/arkor-llama.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download --quiet --no-deps --no-binary :all: --dest "$work" \
  "llama-cpp-python==$VERSION" >&2
sdist="$work/llama_cpp_python-$VERSION.tar.gz"
echo "$SHA256  $sdist" | sha256sum --check --quiet >&2
tar -xzf "$sdist" -C "$work"
src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF >&2
cmake --build "$work/build" --target llama-server llama-quantize -j "$(nproc)" >&2
rm -rf "$dest.partial"
mkdir -p "$dest.partial/bin"
cp "$work/build/bin/llama-server" "$work/build/bin/llama-quantize" "$dest.partial/bin/"
cp "$src/convert_hf_to_gguf.py" "$src/convert_lora_to_gguf.py" "$dest.partial/"
cp -r "$src/conversion" "$src/gguf-py" "$dest.partial/"
cp "$src/LICENSE" "$dest.partial/LICENSE.llama.cpp"
"$dest.partial/bin/llama-server" --version >&2
touch "$dest.partial/.arkor-complete"
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "$dest"

#!/usr/bin/env bash
# Installs the llama.cpp test oracle (llama-cpp-python, pinned in scripts/requirements-llama.txt) into the venv.
# pip compiles llama.cpp from source (several minutes on 2 cores), so the wheel is built once into a per-user
# cache (WEIGHTMARK_WHEEL_CACHE, default ~/.cache/weightmark/wheels, shared by every clone on the machine) and every
# later install takes it from there.
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
WHEELS=${WEIGHTMARK_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weightmark/wheels}
REQ=scripts/requirements-llama.txt
version=$(sed -n 's/^llama-cpp-python==//p' "$REQ")
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $version (llama.cpp from source; once, cached in $WHEELS)" >&2
    # Only the library is needed: no tools, examples, server, tests or multimodal parts.
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    CMAKE_ARGS="${CMAKE_ARGS:-} -DLLAVA_BUILD=OFF -DMTMD_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF" \
        "$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$WHEELS" -r "$REQ"
fi
"$PY" -m pip install -q --disable-pip-version-check --find-links "$WHEELS" -r "$REQ"

#!/usr/bin/env bash
# The README's "Verify a leak in GGUF" table: MiniLM marked by WeightMark, converted to F16 GGUF by
# `weightmark convert`, quantized by the real llama.cpp (llama-cpp-python's llama_model_quantize), then
# detected blind and informed; the unmarked original goes through the same quantizer.
# Usage: scripts/gguf-leak-table.sh [WORKDIR]   (WEIGHTMARK and PYTHON override the binary and the venv)
set -euo pipefail
WM=${WEIGHTMARK:-.build/release/weightmark}
PY=${PYTHON:-.venv/bin/python}
ORACLE=Tests/Oracles/llama_oracle.py
ORIG=.cache/minilm
W=${1:-.cache/gguf-leak}
mkdir -p "$W"
[ -f "$W/owner.key" ] || "$WM" keygen --out "$W/owner.key" >/dev/null
[ -d "$W/marked" ] || "$WM" embed "$ORIG" --key "$W/owner.key" --out "$W/marked" --no-release >/dev/null
"$WM" convert "$W/marked" --type F16 --out "$W/marked-F16.gguf" --force >/dev/null
"$WM" convert "$ORIG" --type F16 --out "$W/original-F16.gguf" --force >/dev/null
z() { "$WM" detect "$@" --json | "$PY" -c 'import json,sys; r=json.load(sys.stdin); print("%.1f" % r["combinedZ"])' || true; }
types() { "$PY" -c '
import sys, collections, gguf
r = gguf.GGUFReader(sys.argv[1])
c = collections.Counter(t.tensor_type.name for t in r.tensors if len(t.shape) == 2)
print(", ".join(f"{n}×{k}" for k, n in c.most_common()))' "$1"; }
echo "| llama.cpp quantization | 2-D tensor types in the file | blind Z | informed Z | unmarked, blind Z |"
echo "|---|---|---:|---:|---:|"
for spec in Q4_K_M Q5_K_M Q3_K_M Q2_K IQ4_NL IQ4_XS IQ3_S IQ2_XS:imatrix IQ4_NL:te=IQ4_NL Q4_K_M:te=Q4_0; do
    ftype=${spec%%:*}; args=(); label=$ftype
    case $spec in
        *:imatrix) args=(--imatrix "$W/marked"); label="$ftype (imatrix)";;
        *:te=*) te=${spec#*:te=}; args=(--token-embedding-type "$te"); label="$ftype, token embeddings $te";;
    esac
    tag=${spec//[:=]/-}
    "$PY" "$ORACLE" quantize "$W/marked-F16.gguf" "$W/marked-$tag.gguf" "$ftype" "${args[@]}" >/dev/null 2>"$W/quantize.log"
    "$PY" "$ORACLE" quantize "$W/original-F16.gguf" "$W/original-$tag.gguf" "$ftype" "${args[@]}" >/dev/null 2>>"$W/quantize.log"
    echo "| $label | $(types "$W/marked-$tag.gguf") | $(z "$W/marked-$tag.gguf" --key "$W/owner.key") | $(z "$W/marked-$tag.gguf" --key "$W/owner.key" --reference "$ORIG") | $(z "$W/original-$tag.gguf" --key "$W/owner.key") |"
done

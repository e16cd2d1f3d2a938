#!/usr/bin/env bash
# Alignment time on a large model (`make scale-bench`): detect --reference on (1) the model itself (the cheap "already
# aligned" check) and (2) a copy with every layer's FFN units and attention heads permuted; prints the alignment
# block's seconds and what it found. Usage: alignment_scale.sh WEIGHTMARK MODEL KEY WORKDIR
set -euo pipefail
WM=$1 MODEL=$2 KEY=$3 WORK=$4
mkdir -p "$WORK"
HEADS=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1] + '/config.json'))['num_attention_heads'])" "$MODEL")
KV=$(python3 -c "import json,sys; c=json.load(open(sys.argv[1] + '/config.json')); print(c.get('num_key_value_heads', c['num_attention_heads']))" "$MODEL")
summary() {
  python3 -c '
import json, sys
r = json.load(sys.stdin); a = r.get("alignment") or {}
layers = a.get("layers", [])
ffn = sum(1 for l in layers if l["ffn"]["moved"] > 0)
heads = sum(1 for l in layers if (l.get("heads") or {}).get("moved", 0) > 0)
seconds = a.get("seconds", float("nan"))
print("%s: alignment %.1f s (%d layers: FFN units permuted in %d, heads in %d); informed Z %.1f"
      % (sys.argv[1], seconds, len(layers), ffn, heads, r["combinedZ"]))
' "$1"
}
"$WM" detect "$MODEL" --key "$KEY" --reference "$MODEL" --json --quiet | summary "already aligned (the model itself)" || true
PERM="$WORK/align-permuted"
if [ ! -d "$PERM" ]; then
  "$WM" attack "$MODEL" --out "$PERM" --attack "permute:seed=7,permute-heads:heads=$HEADS,kv=$KV,seed=8" --quiet
fi
"$WM" detect "$PERM" --key "$KEY" --reference "$MODEL" --json --quiet | summary "FFN units and heads permuted in every layer" || true
rm -rf "$PERM"

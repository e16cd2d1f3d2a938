#!/usr/bin/env bash
# The cost of the owner-key search (`make scale-bench`): blind detect of a marked model with one release key
# (--release r1) and with the owner key plus 100 releases (--enumerate-releases 100: the keys a key store of 100
# default releases gives), side by side in one run; prints both times and their ratio.
# Usage: owner_key_bench.sh WEIGHTMARK MODEL KEY WORKDIR
set -euo pipefail
WM=$1 MODEL=$2 KEY=$3 WORK=$4
mkdir -p "$WORK"
MARKED="$WORK/owner-key-marked"
if [ ! -d "$MARKED" ]; then
  "$WM" embed "$MODEL" --key "$KEY" --release r1 --out "$MARKED" --force --quiet > /dev/null
fi
run() {
  local start end
  start=$(date +%s.%N)
  "$WM" detect "$MARKED" --key "$KEY" "$@" --json --quiet > "$WORK/owner-key.json" || true
  end=$(date +%s.%N)
  python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$start" "$end"
}
one=$(run --release r1)
many=$(run --enumerate-releases 100)
keys=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print((r.get("keySearch") or {}).get("keysTried", 1))' "$WORK/owner-key.json")
python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print("owner-key search, blind: one release key %.2f s; owner key + 100 releases (%s keys) %.2f s; ratio %.1fx (target <= 1.5x)" % (a, sys.argv[3], b, b/a))' "$one" "$many" "$keys"
rm -rf "$MARKED" "$MARKED.weightmark.json" "$MARKED.opening.json"

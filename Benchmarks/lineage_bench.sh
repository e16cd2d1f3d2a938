#!/usr/bin/env bash
# The cost of the lineage test (`make scale-bench`): `lineage` of a model against an FFN-permuted copy of itself, next
# to `detect --reference` (mark and alignment, lineage off) of the same pair, side by side in one run; prints both
# times, their ratio and the two lineage p-values.
# Usage: lineage_bench.sh WEIGHTMARK MODEL KEY WORKDIR
set -euo pipefail
WM=$1 MODEL=$2 KEY=$3 WORK=$4
mkdir -p "$WORK"
PERMUTED="$WORK/lineage-permuted"
if [ ! -e "$PERMUTED" ]; then
  "$WM" attack "$MODEL" --attack permute --out "$PERMUTED" --force --quiet > /dev/null
fi
timed() {
  local start end
  start=$(date +%s.%N)
  "$@" > "$WORK/lineage-bench.json" || true
  end=$(date +%s.%N)
  python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$start" "$end"
}
detect=$(timed "$WM" detect "$PERMUTED" --key "$KEY" --reference "$MODEL" --no-lineage --json --quiet)
lineage=$(timed "$WM" lineage "$PERMUTED" --reference "$MODEL" --json --quiet)
python3 - "$detect" "$lineage" "$WORK/lineage-bench.json" <<'PY'
import json, sys
d, l = float(sys.argv[1]), float(sys.argv[2])
r = json.load(open(sys.argv[3]))
print("lineage vs detect --reference, FFN-permuted copy: detect %.2f s, lineage %.2f s, ratio %.2fx (target <= 2x); "
      "lineage %s, exact log10 p %.1f, robust log10 p %.1f, %d layer pairs" % (d, l, l / d, r["verdict"], r["log10PExact"], r["log10PRobust"], r["pairsTried"]))
PY
rm -rf "$PERMUTED"

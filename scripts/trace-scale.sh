#!/usr/bin/env bash
# Traitor tracing at scale (release build): per-recipient embed of the 2B bf16 synthetic model against
# `cp -r` + `sync` of the same files and plain `embed` (the same rounds, interleaved: the machine may be shared),
# and `trace` over 10^6 listed recipients on MiniLM.
#   scripts/trace-scale.sh [ROUNDS]   (default 3; needs `make scale-bench`'s .cache/scale/synth-2b and MiniLM)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=.build/release/weightmark
swift build -c release --product weightmark >&2
model=.cache/scale/synth-2b
key=.cache/scale/k.key
minilm=.cache/minilm/model.safetensors
work=$(mktemp -d "${TMPDIR:-/tmp}/wm-trace-scale.XXXXXX")
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "per-recipient embed of $model ($(du -sh "$model" | cut -f1)) vs cp -r + sync and plain embed, $rounds rounds:"
: > "$work/embed"; : > "$work/cp"; : > "$work/plain"
for r in $(seq "$rounds"); do
  rm -rf "$work/copy" "$work/copy.weightmark.json" "$work/cp-copy"; sync
  t0=$(now); cp -r "$model" "$work/cp-copy"; sync; t1=$(now)
  rm -rf "$work/cp-copy"; sync
  t2=$(now); "$bin" embed "$model" --key "$key" --out "$work/copy" --quiet >/dev/null; sync; t3=$(now)
  rm -rf "$work/copy" "$work/copy.weightmark.json"; sync
  t4=$(now); "$bin" embed "$model" --key "$key" --recipient "recipient-$r@example.org" --out "$work/copy" --quiet >/dev/null; sync; t5=$(now)
  c=$(echo "$t1 - $t0" | bc); p=$(echo "$t3 - $t2" | bc); e=$(echo "$t5 - $t4" | bc)
  echo "$c" >> "$work/cp"; echo "$p" >> "$work/plain"; echo "$e" >> "$work/embed"
  printf '  round %d: cp+sync %.2f s, embed %.2f s, embed --recipient %.2f s; ratio to cp+sync %.2f, to embed %.2f (load %s)\n' \
    "$r" "$c" "$p" "$e" "$(echo "$e / $c" | bc -l)" "$(echo "$e / $p" | bc -l)" "$(cut -d' ' -f1 /proc/loadavg)"
done
mc=$(median < "$work/cp"); mp=$(median < "$work/plain"); me=$(median < "$work/embed")
printf 'median: cp+sync %.2f s, embed %.2f s, embed --recipient %.2f s; ratio to cp+sync %.2f (target <= 1.5), to embed %.2f\n' \
  "$mc" "$mp" "$me" "$(echo "$me / $mc" | bc -l)" "$(echo "$me / $mp" | bc -l)"
rm -rf "$work/copy" "$work/copy.weightmark.json"

echo "trace over 10^6 recipients on MiniLM:"
awk 'BEGIN { for (i = 0; i < 1000000; i++) printf "recipient-%07d@example.org\n", i }' > "$work/ids.txt"
"$bin" embed "$minilm" --key "$key" --recipient "recipient-0123456@example.org" --out "$work/leak.safetensors" --quiet >/dev/null
t0=$(now)
set +e
"$bin" trace "$work/leak.safetensors" --key "$key" --reference "$minilm" --recipients "$work/ids.txt" --quiet > "$work/trace.txt"
status=$?
set -e
t1=$(now)
head -4 "$work/trace.txt"
printf 'trace of 10^6 ids: %.2f s (exit %d; target <= 30 s)\n' "$(echo "$t1 - $t0" | bc)" "$status"

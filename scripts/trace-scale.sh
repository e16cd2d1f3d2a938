#!/usr/bin/env bash
# Traitor tracing at scale (release build): per-recipient embed of the 2B bf16 synthetic model against
# `cp -r --reflink=never` + `sync` of the same files and plain `embed`, and `embed --recipients` with 4 ids (one
# pass over the original) against 4 copies' worth of `cp` (the same rounds, interleaved: the machine may be
# shared), then `trace` over 10^6 listed recipients on MiniLM.
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
minimum() { sort -g | head -1; }

# `cp` reflinks on copy-on-write filesystems (a copy then writes no data): --reflink=never makes it write the bytes.
# CPU seconds (user + sys, from /usr/bin/time) are printed too: they do not depend on the machine's load as wall
# clock does, and the embeds are CPU-bound on 2 cores while the copy is disk-bound.
timed() { # timed FILE command...: wall seconds to FILE (sync included), CPU seconds to FILE.cpu
  local out=$1; shift
  local t0 t1; t0=$(now)
  /usr/bin/time -f "%U %S" -o "$work/time" "$@" >/dev/null
  sync; t1=$(now)
  echo "$t1 - $t0" | bc >> "$out"
  awk '{print $1 + $2}' "$work/time" >> "$out.cpu"
}
ratio() { echo "$1 / $2" | bc -l; }
printf 'recipient-%d@example.org\n' 1 2 3 4 > "$work/ids4.txt"
echo "per-recipient embed of $model ($(du -sh "$model" | cut -f1)) vs cp -r --reflink=never + sync, plain embed, and --recipients (4 ids) vs 4 x cp, $rounds rounds:"
for f in cp plain embed many; do : > "$work/t-$f"; : > "$work/t-$f.cpu"; done
clean() { rm -rf "$work/cp-copy" "$work"/copy* "$work"/many*; sync; }
for r in $(seq "$rounds"); do
  clean; timed "$work/t-cp" cp -r --reflink=never "$model" "$work/cp-copy"
  clean; timed "$work/t-plain" "$bin" embed "$model" --key "$key" --out "$work/copy" --quiet
  clean; timed "$work/t-embed" "$bin" embed "$model" --key "$key" --recipient "recipient-$r@example.org" --out "$work/copy" --quiet
  clean; timed "$work/t-many" "$bin" embed "$model" --key "$key" --recipients "$work/ids4.txt" --out "$work/many" --quiet
  c=$(tail -1 "$work/t-cp"); p=$(tail -1 "$work/t-plain"); e=$(tail -1 "$work/t-embed"); m=$(tail -1 "$work/t-many")
  printf '  round %d: cp+sync %.2f s, embed %.2f s (%.1f CPU-s), embed --recipient %.2f s (%.1f CPU-s), --recipients x4 %.2f s (%.1f CPU-s); --recipient / cp %.2f, --recipients x4 / (4 x cp) %.2f (load %s)\n' \
    "$r" "$c" "$p" "$(tail -1 "$work/t-plain.cpu")" "$e" "$(tail -1 "$work/t-embed.cpu")" "$m" "$(tail -1 "$work/t-many.cpu")" \
    "$(ratio "$e" "$c")" "$(ratio "$m" "(4 * $c)")" "$(cut -d' ' -f1 /proc/loadavg)"
done
clean
mc=$(median < "$work/t-cp"); mp=$(median < "$work/t-plain"); me=$(median < "$work/t-embed"); mm=$(median < "$work/t-many")
printf 'median: cp+sync %.2f s, embed %.2f s (%.1f CPU-s), embed --recipient %.2f s (%.1f CPU-s), --recipients x4 %.2f s (%.1f CPU-s)\n' \
  "$mc" "$mp" "$(median < "$work/t-plain.cpu")" "$me" "$(median < "$work/t-embed.cpu")" "$mm" "$(median < "$work/t-many.cpu")"
printf 'ratio embed --recipient / (cp + sync): %.2f (target <= 1.5); to plain embed %.2f\n' "$(ratio "$me" "$mc")" "$(ratio "$me" "$mp")"
printf 'ratio embed --recipients (4 copies) / (4 x (cp + sync)): %.2f\n' "$(ratio "$mm" "(4 * $mc)")"
# On a shared machine the fastest round is the one least slowed by other jobs (the embeds are CPU-bound, the copy
# is not): the ratios of the minima estimate the quiet machine's.
nc=$(minimum < "$work/t-cp"); np=$(minimum < "$work/t-plain"); ne=$(minimum < "$work/t-embed"); nm=$(minimum < "$work/t-many")
printf 'fastest rounds: cp+sync %.2f s, embed %.2f s, embed --recipient %.2f s, --recipients x4 %.2f s; --recipient / cp %.2f, --recipients x4 / (4 x cp) %.2f\n' \
  "$nc" "$np" "$ne" "$nm" "$(ratio "$ne" "$nc")" "$(ratio "$nm" "(4 * $nc)")"

echo "trace over 10^6 recipients on MiniLM:"
awk 'BEGIN { for (i = 0; i < 1000000; i++) printf "recipient-%07d@example.org\n", i }' > "$work/ids.txt"
"$bin" embed "$minilm" --key "$key" --recipient "recipient-0123456@example.org" --out "$work/leak.safetensors" --quiet >/dev/null
t0=$(now)
set +e
"$bin" trace "$work/leak.safetensors" --key "$key" --manifest "$work/leak.safetensors.weightmark.json" --reference "$minilm" --recipients "$work/ids.txt" --quiet > "$work/trace.txt"
status=$?
set -e
t1=$(now)
head -4 "$work/trace.txt"
printf 'trace of 10^6 ids: %.2f s (exit %d; target <= 30 s)\n' "$(echo "$t1 - $t0" | bc)" "$status"

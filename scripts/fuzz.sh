#!/usr/bin/env bash
# libFuzzer targets for WeightMark's parsers (Fuzz/<Target>/main.swift).
#
#   scripts/fuzz.sh build            build every target, plain (-sanitize=fuzzer) and with AddressSanitizer
#   scripts/fuzz.sh run [TARGET...]  build, then fuzz each target for FUZZ_SECONDS (default 60) per variant
#                                    (FUZZ_VARIANTS, default "plain asan"); exits non-zero on any crash,
#                                    hang (FUZZ_TIMEOUT seconds per input, default 10), leak (ASan) or memory
#                                    blow-up (more than 2 GB resident or in one allocation)
#                                    (FUZZ_ARGS: extra libFuzzer flags, e.g. -runs=10000000)
#   scripts/fuzz.sh TARGET [libFuzzer args...]   build, then run one target by hand (plain variant unless
#                                    FUZZ_VARIANTS=asan), e.g. to replay a crash file
#
# SwiftPM cannot build these: a target linked with the fuzzer runtime has no usable `main` for `swift build`.
# So this compiles the TensorIO sources as a module (and the CTensorIOKernels C sources: no watermark code with clang
# -fsanitize=fuzzer-no-link) optimized as the package builds them (-O, preconditions on), then links each entry
# file against that module, into .build-fuzz/.
# Seeds: Fuzz/<Target>/seeds/ (committed; every malformed case of the test suites plus small valid files, kept in
# sync by those suites). New inputs libFuzzer finds go to .build-fuzz/corpus/<Target>/, never into the seeds;
# crashes to .build-fuzz/findings/<Target>/.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT="$ROOT/.build-fuzz"
SWIFTC=${SWIFTC:-swiftc}
CLANG=${CLANG:-clang}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-10}
FUZZ_VARIANTS=${FUZZ_VARIANTS:-plain asan}
TARGETS=(SafetensorsParser GGUFParser ContainersParser ONNXParser QuantizedParser)
# Swift's own crash handler would catch a trap first and exit before libFuzzer saves the input.
export SWIFT_BACKTRACE=enable=no

sanitizers() { case "$1" in plain) echo fuzzer ;; asan) echo fuzzer,address ;; *) echo "unknown variant $1" >&2; exit 2 ;; esac; }

# Builds all targets of one variant; skips work whose inputs did not change.
build_variant() {
    local variant=$1 san
    san=$(sanitizers "$variant")
    local dir="$OUT/$variant"
    mkdir -p "$dir/CTensorIOKernels" "$dir/obj"
    local stamp="$dir/.inputs"
    local inputs
    inputs=$( (cd "$ROOT" && find Sources/TensorIO Sources/CTensorIOKernels Fuzz -name '*.swift' -o -name '*.c' -o -name '*.h' | sort | xargs sha256sum; sha256sum scripts/fuzz.sh) | sha256sum)
    local complete=1
    for t in "${TARGETS[@]}"; do [[ -x "$dir/$t" ]] || complete=0; done
    if [[ $complete == 1 && -f "$stamp" && "$(cat "$stamp")" == "$inputs" ]]; then return; fi

    echo "fuzz: building $variant targets (-sanitize=$san) in $dir" >&2
    cat > "$dir/CTensorIOKernels/module.modulemap" <<EOF
module CTensorIOKernels {
    header "$ROOT/Sources/CTensorIOKernels/include/tensorio_kernels.h"
    export *
}
EOF
    local cobjs=()
    for c in "$ROOT"/Sources/CTensorIOKernels/*.c; do
        local o="$dir/obj/$(basename "$c" .c).o"
        "$CLANG" -O2 -fsanitize="${san/fuzzer/fuzzer-no-link}" -I "$ROOT/Sources/CTensorIOKernels/include" -c "$c" -o "$o"
        cobjs+=("$o")
    done
    local sources=()
    while IFS= read -r f; do sources+=("$f"); done < <(find "$ROOT/Sources/TensorIO" -name '*.swift' | sort)
    "$SWIFTC" -module-name TensorIO -package-name WeightMark -parse-as-library -O -wmo -sanitize="$san" -I "$dir/CTensorIOKernels" -I "$ROOT/Sources/CZlib" \
        -emit-module -emit-module-path "$dir/TensorIO.swiftmodule" -c "${sources[@]}" -o "$dir/obj/TensorIO.o"
    for t in "${TARGETS[@]}"; do
        # lld: gold warns about every local ASan symbol it cannot export.
        "$SWIFTC" -parse-as-library -O -sanitize="$san" -use-ld=lld -I "$dir" -I "$dir/CTensorIOKernels" -I "$ROOT/Sources/CZlib" \
            "$ROOT/Fuzz/$t/main.swift" "$dir/obj/TensorIO.o" "${cobjs[@]}" -lz -o "$dir/$t"
    done
    echo "$inputs" > "$stamp"
}

build_all() { for v in $FUZZ_VARIANTS; do build_variant "$v"; done; }

# Runs one target of one variant for FUZZ_SECONDS; prints the executions done; fails on a finding.
run_target() {
    local variant=$1 target=$2
    shift 2
    local corpus="$OUT/corpus/$target" findings="$OUT/findings/$target" log="$OUT/logs/$target-$variant.log"
    mkdir -p "$corpus" "$findings" "$OUT/logs"
    echo "fuzz: $target ($variant) for ${FUZZ_SECONDS}s, log $log" >&2
    local dict=()
    for d in "$ROOT/Fuzz/$target"/*.dict; do if [[ -f "$d" ]]; then dict=(-dict="$d"); fi; done
    local status=0
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
    "$OUT/$variant/$target" "$corpus" "$ROOT/Fuzz/$target/seeds" \
        -max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" -max_len=8192 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$findings/$variant-" "${dict[@]}" "$@" > "$log" 2>&1 || status=$?
    local execs
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    if [[ $status != 0 ]]; then
        echo "fuzz: $target ($variant) FAILED after $execs executions (exit $status); see $log and $findings" >&2
        grep -E 'ERROR|Fatal error|SUMMARY|deadly signal|Test unit written' "$log" | head -20 >&2 || true
        return 1
    fi
    echo "fuzz: $target ($variant): $execs executions, no crash" >&2
}

cd "$ROOT"
case "${1:-run}" in
build)
    build_all ;;
run)
    shift || true
    build_all
    selected=("$@")
    [[ ${#selected[@]} -gt 0 ]] || selected=("${TARGETS[@]}")
    failed=0
    for t in "${selected[@]}"; do
        # shellcheck disable=SC2086 # FUZZ_ARGS holds several libFuzzer flags
        for v in $FUZZ_VARIANTS; do run_target "$v" "$t" ${FUZZ_ARGS:-} || failed=1; done
    done
    exit $failed ;;
*)
    target=$1; shift
    [[ -d "$ROOT/Fuzz/$target" ]] || { echo "no fuzz target $target (have: ${TARGETS[*]})" >&2; exit 2; }
    variant=${FUZZ_VARIANTS%% *}
    build_variant "$variant"
    exec "$OUT/$variant/$target" "$@" ;;
esac

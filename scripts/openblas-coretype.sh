#!/usr/bin/env bash
# Prints the OpenBLAS kernel family for this CPU when it has AVX-512 or AVX2+FMA (SkylakeX or Haswell),
# nothing otherwise. Debian's OpenBLAS 0.3.21 misdetects some virtual CPUs and falls back to Prescott
# (SSE3) kernels; `weightmark` corrects this itself at start (BLASInfo.coreTypeCorrection), but benchmark
# executables cannot, so `make bench` sets OPENBLAS_CORETYPE from this for them.
flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
has() { for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done; }
if has avx512f avx512bw avx512dq avx512vl avx512cd; then echo SkylakeX
elif has avx2 fma; then echo Haswell
fi

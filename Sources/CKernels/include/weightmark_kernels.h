#ifndef WEIGHTMARK_KERNELS_H
#define WEIGHTMARK_KERNELS_H
// Hot loops of the watermark in C: the keyed stream's rounds and the Gaussian carriers' generation, where
// Swift's generic SIMD code does not reach the vector units. Every function here computes a value pinned by
// the detection format (Tests/WatermarkingTests/Golden), so each is checked against the scalar Swift reference.
#include <stddef.h>
#include <stdint.h>
#include "tensorio_kernels.h"

/// Four consecutive ChaCha20 blocks (RFC 8439 section 2.3) for block counters state[12] .. state[12]+3:
/// 64 little-endian words, block after block. `state` holds the 16 input words.
void weightmark_chacha20_blocks4(const uint32_t state[16], uint32_t out[64]);

/// The first `count` standard normal draws of the keyed generator keyed by `key` (8 little-endian words of
/// the 32-byte subkey; zero nonce, counter 0), exactly as `KeyedGenerator.nextGaussian()` draws them:
/// uniforms u = (top 53 bits of a 64-bit draw + 0.5) * 2^-53, Box-Muller pairs (r cos t, r sin t) with
/// r = sqrt(-2 ln u1), t = 2 pi u2. Written as floats to `out32` and/or doubles to `out64` (either may be
/// NULL). AVX-512 or AVX2 where the CPU has them (chosen at run time), portable C otherwise. The
/// logarithm, sine and cosine are evaluated to within about one unit in the last place (fdlibm's
/// polynomials), so the doubles agree with the C library's to ~1e-16 and the floats are identical except
/// in the rare case where a double lies within an ulp of a float rounding boundary.
void weightmark_keyed_gaussians(const uint32_t key[8], size_t count, float *out32, double *out64);

/// `weightmark_keyed_gaussians` on a given code path (for tests; a level above the CPU's is undefined).
void weightmark_keyed_gaussians_at_level(int level, const uint32_t key[8], size_t count, float *out32, double *out64);

/// z (k×32, row-major) = x (k×n, row-major, row stride ldx elements) · b (n×32, row-major), accumulated in
/// float in column order j = 0, 1, … for each output. `level` is a code path as above (at most the CPU's).
void weightmark_project32_f32(int level, const float *x, size_t k, size_t n, size_t ldx, const float *b, float *z);

/// The same with x in bfloat16 (the top 16 bits of an IEEE float), widened exactly on the fly.
void weightmark_project32_bf16(int level, const uint16_t *x, size_t k, size_t n, size_t ldx, const float *b, float *z);

/// p (k×n, row-major) = c (k×32, row-major) · Bᵀ: the rank-32 pattern rows (A S)_rows Bᵀ that embedding adds,
/// in register tiles of 12 rows × 32 columns. B (n×32) is given as `weightmark_pattern32_pack` packs it.
void weightmark_pattern32(int level, const float *c, size_t k, const float *packed, size_t n, float *p);

/// Packs B (n×32, row-major) for `weightmark_pattern32`: Bᵀ in panels of 32 columns, each 32×32 panel
/// contiguous, the last one zero-padded; `packed` holds ceil(n/32)·1024 floats.
void weightmark_pattern32_pack(const float *b, size_t n, float *packed);

/// Traitor tracing: sum of gain[i] over the code positions i < count where keystream byte i of ChaCha20
/// keyed by `key` (8 little-endian words; zero nonce, counter 0) is below thresholds[i], i.e. where the
/// recipient's code bit is 1. Accumulated in float (16 partial sums in a fixed order): a screening value;
/// decisions are recomputed in double precision by the caller.
float weightmark_trace_score(const uint32_t key[8], size_t count, const uint8_t *thresholds, const float *gain);

/// Adds a recipient's fingerprint to `rows` rows of an n-wide matrix starting at row `first_row` (out: row-major,
/// leading dimension n): out[r][c] += scale * chip(r, c) * signs[pos(r, c / 64)], where pos is keystream word
/// c/64 of ChaCha20(position_key, nonce LE32(row) || LE32(row >> 32) || 0) masked by `position_mask`, and chip
/// is bit c mod 32 of word c/32 of ChaCha20(chip_key, same nonce) (1 -> +1, 0 -> -1). docs/FORMAT.md, "Fingerprints".
void weightmark_fingerprint_rows(const uint32_t position_key[8], const uint32_t chip_key[8], uint64_t first_row, size_t rows,
                                 size_t n, const float *signs, uint32_t position_mask, float scale, float *out);

#endif

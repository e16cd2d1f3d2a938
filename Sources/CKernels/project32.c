// The detector's inner product Z = X·B for a rank-32 carrier B, without packing: X rows are consumed where
// they lie (f32 block buffers, or bf16 straight from the mapped file, widened in L1-sized chunks), B rows
// stream from L2, and R rows × 32 columns of Z stay in registers. One body, compiled for AVX-512, AVX2+FMA
// and baseline, chosen at run time.
#include "weightmark_kernels.h"
#include "weightmark_dispatch.h"
#include <string.h>

#pragma clang diagnostic ignored "-Wpsabi" // vector arguments only between always-inline helpers

typedef float v16f __attribute__((vector_size(64), aligned(4)));
#define INLINE static inline __attribute__((always_inline))
enum { COLS = 32, CHUNK = 256, RMAX = 12 };

/// The register tile's step: for each of R rows, lo/hi (columns 0..15 / 16..31) += v[r * vstride] * b[0..32).
INLINE void accumulate(const int R, v16f *lo, v16f *hi, const float *b, const float *v, size_t vstride) {
    v16f b0 = *(const v16f *)b, b1 = *(const v16f *)(b + 16);
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) {
        float x = v[r * vstride];
        lo[r] += x * b0;
        hi[r] += x * b1;
    }
}

INLINE void clear_tile(const int R, v16f *lo, v16f *hi) {
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) { lo[r] = (v16f){0}; hi[r] = (v16f){0}; }
}

/// Stores R rows of 32 columns at stride ld.
INLINE void store_tile(const int R, const v16f *lo, const v16f *hi, float *out, size_t ld) {
#pragma clang loop unroll(full)
    for (int r = 0; r < R; r++) { *(v16f *)(out + r * ld) = lo[r]; *(v16f *)(out + r * ld + 16) = hi[r]; }
}

/// z[r][0..32) = sum_j x[r][j] * b[j][0..32) for r < R, x in f32 or (bf16 != 0) bfloat16; R and bf16 are
/// constants after inlining. CHUNK columns of the R rows are copied (widened) into an L1 buffer, then
/// multiplied against the matching rows of b, with the R×32 sums in registers throughout.
INLINE void rows(const int R, const int bf16, const void *x, size_t ldx, size_t n, const float *b, float *z) {
    v16f lo[RMAX], hi[RMAX];
    float buf[RMAX * CHUNK] __attribute__((aligned(64)));
    clear_tile(R, lo, hi);
    for (size_t j0 = 0; j0 < n; j0 += CHUNK) {
        size_t width = n - j0 < CHUNK ? n - j0 : CHUNK;
        for (int r = 0; r < R; r++) {
            if (bf16) {
                const uint16_t *src = (const uint16_t *)x + r * ldx + j0;
                uint32_t *dst = (uint32_t *)(buf + r * CHUNK);
                for (size_t j = 0; j < width; j++) dst[j] = (uint32_t)src[j] << 16;
            } else {
                memcpy(buf + r * CHUNK, (const float *)x + r * ldx + j0, width * sizeof(float));
            }
        }
        const float *bj = b + COLS * j0;
        for (size_t j = 0; j < width; j++) accumulate(R, lo, hi, bj + COLS * j, buf + j, CHUNK);
    }
    store_tile(R, lo, hi, z, COLS);
}

// Full blocks of `rmax` rows, then the remainder in blocks of 4 and 1 (a constant row count each, so the
// accumulators stay in registers): rmax is 12 with 32 vector registers (AVX-512), 2 with 16.
#define PROJECT_BODY(BF16, RMAXV)                                                                  \
    size_t r0 = 0;                                                                                 \
    for (; r0 + RMAXV <= k; r0 += RMAXV) rows(RMAXV, BF16, x + r0 * ldx, ldx, n, b, z + r0 * COLS); \
    for (; r0 + 4 <= k && RMAXV >= 4; r0 += 4) rows(4, BF16, x + r0 * ldx, ldx, n, b, z + r0 * COLS); \
    for (; r0 < k; r0++) rows(1, BF16, x + r0 * ldx, ldx, n, b, z + r0 * COLS);

WM_VARIANTS(project_f32, (const float *x, size_t k, size_t n, size_t ldx, const float *b, float *z),
            PROJECT_BODY(0, RMAX), PROJECT_BODY(0, 2))
WM_VARIANTS(project_bf16, (const uint16_t *x, size_t k, size_t n, size_t ldx, const float *b, float *z),
            PROJECT_BODY(1, RMAX), PROJECT_BODY(1, 2))

void weightmark_project32_f32(int level, const float *x, size_t k, size_t n, size_t ldx, const float *b, float *z) {
    WM_DISPATCH(level, project_f32, (x, k, n, ldx, b, z));
}

void weightmark_project32_bf16(int level, const uint16_t *x, size_t k, size_t n, size_t ldx, const float *b, float *z) {
    WM_DISPATCH(level, project_bf16, (x, k, n, ldx, b, z));
}

/// p[r][j0..j0+32) for r < R: sum over q of c[r][q] * panel[q][0..32), R a constant after inlining. The
/// panel holds the 32×32 block of Bᵀ for these columns contiguously, so the tile streams 4 KB in order.
INLINE void pattern_tile(const int R, const float *c, const float *panel, size_t n, size_t j0, float *p) {
    v16f lo[RMAX], hi[RMAX];
    clear_tile(R, lo, hi);
    for (int q = 0; q < COLS; q++) accumulate(R, lo, hi, panel + q * COLS, c + q, COLS);
    store_tile(R, lo, hi, p + j0, n);
}

/// Rows of the pattern, columns in panels of 32 (a scalar loop for the last n mod 32, from the zero-padded
/// last panel).
INLINE void pattern_rows(const int R, const float *c, const float *packed, size_t n, float *p) {
    size_t j0 = 0;
    for (; j0 + COLS <= n; j0 += COLS) pattern_tile(R, c, packed + j0 * COLS, n, j0, p);
    const float *panel = packed + j0 * COLS;
    for (int r = 0; r < R; r++)
        for (size_t j = j0; j < n; j++) {
            float sum = 0;
            for (int q = 0; q < COLS; q++) sum += c[r * COLS + q] * panel[q * COLS + (j - j0)];
            p[r * n + j] = sum;
        }
}

#define PATTERN_BODY(RMAXV)                                                                   \
    size_t r0 = 0;                                                                            \
    for (; r0 + RMAXV <= k; r0 += RMAXV) pattern_rows(RMAXV, c + r0 * COLS, bt, n, p + r0 * n); \
    for (; r0 + 4 <= k && RMAXV >= 4; r0 += 4) pattern_rows(4, c + r0 * COLS, bt, n, p + r0 * n); \
    for (; r0 < k; r0++) pattern_rows(1, c + r0 * COLS, bt, n, p + r0 * n);

WM_VARIANTS(pattern, (const float *c, size_t k, const float *bt, size_t n, float *p), PATTERN_BODY(RMAX), PATTERN_BODY(2))

void weightmark_pattern32(int level, const float *c, size_t k, const float *packed, size_t n, float *p) {
    WM_DISPATCH(level, pattern, (c, k, packed, n, p));
}

void weightmark_pattern32_pack(const float *b, size_t n, float *packed) {
    for (size_t j0 = 0; j0 < n; j0 += COLS)
        for (int q = 0; q < COLS; q++)
            for (size_t jj = 0; jj < COLS; jj++)
                packed[j0 * COLS + q * COLS + jj] = j0 + jj < n ? b[(j0 + jj) * COLS + q] : 0.0f;
}

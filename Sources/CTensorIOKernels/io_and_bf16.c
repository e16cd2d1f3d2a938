// Output-side helpers: early writeback of written file ranges, and bf16 stochastic rounding driven by
// SplitMix64 (vectorized; byte-identical to FloatConversion.encodeStochastically with a SplitMix64).
#define _GNU_SOURCE
#include "tensorio_kernels.h"
#include "weightmark_dispatch.h"
#include <string.h>
#if defined(__linux__)
#include <fcntl.h>
#endif

int weightmark_start_writeback(int fd, int64_t offset, int64_t length) {
#if defined(__linux__)
    return sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd; (void)offset; (void)length;
    return 0;
#endif
}

int weightmark_set_direct_io(int fd, int on) {
#if defined(__linux__) && defined(O_DIRECT)
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, on ? (flags | O_DIRECT) : (flags & ~O_DIRECT));
#else
    (void)fd; (void)on;
    return -1;
#endif
}

#define INLINE static inline __attribute__((always_inline))
enum { DRAWS = 8, VALUES = 4 * DRAWS };

INLINE uint64_t splitmix_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/// The next 8 draws of SplitMix64 as 32 16-bit pieces: draw d serves values 4d..4d+3, low 16 bits first
/// (the little-endian halves of the draws, in order).
INLINE void next_pieces(uint64_t *s, uint16_t r16[VALUES]) {
    uint64_t draws[DRAWS];
    for (int d = 0; d < DRAWS; d++) draws[d] = splitmix_mix(*s + (uint64_t)(d + 1) * 0x9E3779B97F4A7C15ULL);
    *s += (uint64_t)DRAWS * 0x9E3779B97F4A7C15ULL;
    memcpy(r16, draws, sizeof draws);
}

/// One draw, for the tail (one per group of four values; unused pieces are dropped).
INLINE uint64_t next_draw(uint64_t *s) {
    *s += 0x9E3779B97F4A7C15ULL;
    return splitmix_mix(*s);
}

/// Round to nearest even (NaN kept quiet), as FloatConversion.floatToBF16.
INLINE uint16_t bf16_nearest(uint32_t b) {
    int nan = (b & 0x7FFFFFFF) > 0x7F800000;
    return nan ? (uint16_t)((b >> 16) | 0x0040) : (uint16_t)((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
}

/// One value: truncate, then step away from zero when the dropped 16 bits exceed r.
INLINE uint16_t bf16_stochastic(uint32_t b, uint32_t r) {
    uint16_t h = (uint16_t)((b >> 16) + ((b & 0xFFFF) > r ? 1 : 0));
    return ((b & 0x7F800000) == 0x7F800000 || (h & 0x7F80) == 0x7F80) ? bf16_nearest(b) : h;
}

INLINE void stochastic_body(const float *x, size_t count, uint16_t *out, uint64_t *state) {
    uint64_t s = *state;
    size_t i = 0;
    for (; i + VALUES <= count; i += VALUES) {
        uint32_t bits[VALUES];
        memcpy(bits, x + i, sizeof bits);
        uint16_t r16[VALUES];
        next_pieces(&s, r16);
        for (int v = 0; v < VALUES; v++) out[i + v] = bf16_stochastic(bits[v], r16[v]);
    }
    // Tail: one draw per (partial) group of four; unused bits are dropped, as in the Swift loop.
    for (; i < count; i += 4) {
        uint64_t z = next_draw(&s);
        for (size_t v = 0; v < 4 && i + v < count; v++) {
            uint32_t b;
            memcpy(&b, x + i + v, 4);
            out[i + v] = bf16_stochastic(b, (uint32_t)(z >> (16 * v)) & 0xFFFF);
        }
    }
    *state = s;
}

/// v = w + beta * h * p for one bf16 value, in the Swift loop's float operations and order.
INLINE float marked_value(float wf, float p, float beta, float magnitude_scale) {
#pragma clang fp contract(off)
    float h = magnitude_scale != 0 ? beta * (__builtin_fabsf(wf) * magnitude_scale) : beta;
    return wf + h * p;
}

INLINE float widen_bf16(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

INLINE uint32_t float_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

/// Marks bf16 weights in one pass: v = w + beta * h * p with h = 1 (uniform, magnitude_scale = 0) or
/// |w| * magnitude_scale (no FMA contraction, as in Swift), stochastic rounding exactly as stochastic_body,
/// and the stored distortion sum of (stored - w)^2 (float sums per lane, added in double at the end).
INLINE void mark_body(const uint16_t *w, const float *p, float beta, float magnitude_scale, size_t count,
                      uint16_t *out, uint64_t *state, double *diff2) {
    uint64_t s = *state;
    float lanes[VALUES] = {0};
    size_t i = 0;
    for (; i + VALUES <= count; i += VALUES) {
        uint16_t r16[VALUES];
        next_pieces(&s, r16);
        for (int v = 0; v < VALUES; v++) {
            float wf = widen_bf16(w[i + v]);
            uint16_t o = bf16_stochastic(float_bits(marked_value(wf, p[i + v], beta, magnitude_scale)), r16[v]);
            out[i + v] = o;
            float d = widen_bf16(o) - wf;
            lanes[v] += d * d;
        }
    }
    double total = 0;
    for (int v = 0; v < VALUES; v++) total += lanes[v];
    for (; i < count; i += 4) {
        uint64_t z = next_draw(&s);
        for (size_t v = 0; v < 4 && i + v < count; v++) {
            float wf = widen_bf16(w[i + v]);
            uint16_t o = bf16_stochastic(float_bits(marked_value(wf, p[i + v], beta, magnitude_scale)),
                                         (uint32_t)(z >> (16 * v)) & 0xFFFF);
            out[i + v] = o;
            float d = widen_bf16(o) - wf;
            total += d * d;
        }
    }
    *diff2 += total;
    *state = s;
}

/// Adds the sum of w^2 over bf16 values to *sum: squares are exact in double, summed in 16 lanes.
INLINE void sum_squares_body(const uint16_t *w, size_t count, double *sum) {
    double lanes[16] = {0};
    size_t i = 0;
    for (; i + 16 <= count; i += 16) {
        for (int v = 0; v < 16; v++) {
            double x = widen_bf16(w[i + v]);
            lanes[v] += x * x;
        }
    }
    double total = 0;
    for (; i < count; i++) {
        double x = widen_bf16(w[i]);
        total += x * x;
    }
    for (int v = 0; v < 16; v++) total += lanes[v];
    *sum += total;
}

WM_VARIANTS(sum_squares, (const uint16_t *w, size_t count, double *sum), sum_squares_body(w, count, sum);,
            sum_squares_body(w, count, sum);)

void weightmark_bf16_sum_squares(int level, const uint16_t *w, size_t count, double *sum) {
    WM_DISPATCH(level, sum_squares, (w, count, sum));
}

WM_VARIANTS(stochastic, (const float *x, size_t count, uint16_t *out, uint64_t *state),
            stochastic_body(x, count, out, state);, stochastic_body(x, count, out, state);)
WM_VARIANTS(mark, (const uint16_t *w, const float *p, float beta, float scale, size_t count, uint16_t *out, uint64_t *state,
                   double *diff2),
            mark_body(w, p, beta, scale, count, out, state, diff2);, mark_body(w, p, beta, scale, count, out, state, diff2);)

void weightmark_mark_bf16(int level, const uint16_t *w, const float *p, float beta, float magnitude_scale, size_t count,
                          uint16_t *out, uint64_t *state, double *diff2) {
    WM_DISPATCH(level, mark, (w, p, beta, magnitude_scale, count, out, state, diff2));
}

void weightmark_bf16_stochastic(int level, const float *x, size_t count, uint16_t *out, uint64_t *state) {
    WM_DISPATCH(level, stochastic, (x, count, out, state));
}

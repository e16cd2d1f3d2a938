// Keyed Gaussian carriers, 16 ChaCha20 blocks (128 draws) at a time. One body, written with vector
// extensions, compiled three times (AVX-512, AVX2+FMA, baseline) and chosen at run time.
//
// The transcendental functions follow fdlibm (Sun Microsystems, 1993; e_log.c, k_sin.c, k_cos.c): the
// same argument reduction and the published minimax coefficients, evaluated branch-free on vectors.
#include "weightmark_kernels.h"
#include "weightmark_dispatch.h"
#include <string.h>

#pragma clang diagnostic ignored "-Wpsabi" // vector arguments only between always-inline helpers

typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef int64_t v8l __attribute__((vector_size(64)));
typedef double v8d __attribute__((vector_size(64)));

#define INLINE static inline __attribute__((always_inline))
#define ROTV(v, n) (((v) << (n)) | ((v) >> (32 - (n))))
#define QRV(a, b, c, d)                                                   \
    a += b; d ^= a; d = ROTV(d, 16); c += d; b ^= c; b = ROTV(b, 12);     \
    a += b; d ^= a; d = ROTV(d, 8);  c += d; b ^= c; b = ROTV(b, 7);

/// 16 blocks, counters counter..counter+15 (wrapping): x[w] lane l = word w of block l.
INLINE void chacha_blocks16(const uint32_t state[16], uint32_t counter, v16u x[16]) {
    v16u s[16];
    for (int i = 0; i < 16; i++) s[i] = (v16u){0} + state[i];
    s[12] = (v16u){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15} + counter;
    for (int i = 0; i < 16; i++) x[i] = s[i];
    for (int r = 0; r < 10; r++) {
        QRV(x[0], x[4], x[8], x[12]) QRV(x[1], x[5], x[9], x[13]) QRV(x[2], x[6], x[10], x[14]) QRV(x[3], x[7], x[11], x[15])
        QRV(x[0], x[5], x[10], x[15]) QRV(x[1], x[6], x[11], x[12]) QRV(x[2], x[7], x[8], x[13]) QRV(x[3], x[4], x[9], x[14])
    }
    for (int i = 0; i < 16; i++) x[i] += s[i];
}

INLINE v8d select_d(v8l mask, v8d a, v8d b) { return (v8d)(((v8l)a & mask) | ((v8l)b & ~mask)); }

/// (top 53 bits of lo | hi << 32 + 0.5) * 2^-53, as KeyedGenerator.nextUniform.
INLINE v8d uniform53(v8u lo, v8u hi) {
    v8l w = __builtin_convertvector(lo, v8l) | (__builtin_convertvector(hi, v8l) << 32);
    v8l k = (v8l)((uint64_t __attribute__((vector_size(64))))w >> 11);
    return (__builtin_convertvector(k, v8d) + 0.5) * 0x1p-53;
}

/// Natural logarithm of normal positive doubles (fdlibm e_log.c without the special cases).
INLINE v8d log_v(v8d x) {
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01, Lg3 = 2.857142874366239149e-01,
                 Lg4 = 2.222219843214978396e-01, Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                 Lg7 = 1.479819860511658591e-01;
    v8l bits = (v8l)x;
    v8l hx = bits >> 32;
    v8l k = (hx >> 20) - 1023;
    hx &= 0x000fffff;
    v8l i = (hx + 0x95f64) & 0x100000;
    v8d xn = (v8d)(((hx | (i ^ 0x3ff00000)) << 32) | (bits & 0xffffffff)); // x or x/2, in [sqrt(2)/2, sqrt(2))
    k += i >> 20;
    v8d f = xn - 1.0;
    v8d s = f / (2.0 + f);
    v8d dk = __builtin_convertvector(k, v8d);
    v8d z = s * s, w = z * z;
    v8d t1 = w * (Lg2 + w * (Lg4 + w * Lg6));
    v8d t2 = z * (Lg1 + w * (Lg3 + w * (Lg5 + w * Lg7)));
    v8d R = t2 + t1;
    v8d hfsq = 0.5 * f * f;
    v8d wide = dk * ln2_hi - ((hfsq - (s * (hfsq + R) + dk * ln2_lo)) - f);
    v8d near = dk * ln2_hi - ((s * (f - R) - dk * ln2_lo) - f);
    v8l useWide = ((hx - 0x6147a) | (0x6b851 - hx)) > 0;
    return select_d(useWide, wide, near);
}

/// sin and cos of t in [0, 2 pi]: Cody-Waite reduction by pi/2 (fdlibm's 33+53-bit split, exact first
/// step), then fdlibm's kernels on [-pi/4, pi/4] and the quadrant's swap and signs.
INLINE void sincos_v(v8d t, v8d *sine, v8d *cosine) {
    const double invpio2 = 6.36619772367581382433e-01, pio2_1 = 1.57079632673412561417e+00,
                 pio2_1t = 6.07710050650619224932e-11;
    const double S1 = -1.66666666666666324348e-01, S2 = 8.33333333332248946124e-03, S3 = -1.98412698298579493134e-04,
                 S4 = 2.75573137070700676789e-06, S5 = -2.50507602534068634195e-08, S6 = 1.58969099521155010221e-10;
    const double C1 = 4.16666666666666019037e-02, C2 = -1.38888888888741095749e-03, C3 = 2.48015872894767294178e-05,
                 C4 = -2.75573143513906633035e-07, C5 = 2.08757232129817482790e-09, C6 = -1.13596475577881948265e-11;
    v8d fn = (t * invpio2 + 0x1.8p52) - 0x1.8p52;        // nearest integer (t is small and positive)
    v8l n = __builtin_convertvector(fn, v8l);
    v8d y = (t - fn * pio2_1) - fn * pio2_1t;
    v8d z = y * y;
    // __kernel_sin(y, 0, 0)
    v8d v = z * y;
    v8d rs = S2 + z * (S3 + z * (S4 + z * (S5 + z * S6)));
    v8d sy = y + v * (S1 + z * rs);
    // __kernel_cos(y, 0)
    v8d rc = z * (C1 + z * (C2 + z * (C3 + z * (C4 + z * (C5 + z * C6)))));
    v8l ix = ((v8l)y >> 32) & 0x7fffffff;
    v8d qx = select_d(ix > 0x3fe90000, (v8d){0} + 0.28125, (v8d)((ix - 0x00200000) << 32));
    v8d cosSmall = 1.0 - (0.5 * z - z * rc);
    v8d cosLarge = (1.0 - qx) - ((0.5 * z - qx) - z * rc);
    v8d cy = select_d(ix < 0x3FD33333, cosSmall, cosLarge);
    v8l swap = -(n & 1);                                  // all ones in odd quadrants
    v8l sinSign = (n & 2) << 62, cosSign = ((n + 1) & 2) << 62;
    *sine = (v8d)((v8l)select_d(swap, cy, sy) ^ sinSign);
    *cosine = (v8d)((v8l)select_d(swap, sy, cy) ^ cosSign);
}

INLINE void gaussians_body(const uint32_t key[8], size_t count, float *out32, double *out64) {
    uint32_t state[16] = {0x61707865, 0x3320646e, 0x79622d32, 0x6b206574};
    memcpy(state + 4, key, 32);
    // state[12] = block counter, state[13..15] = zero nonce.
    uint32_t counter = 0;
    double batch[128];
    for (size_t done = 0; done < count; done += 128, counter += 16) {
        v16u x[16];
        chacha_blocks16(state, counter, x);
        // Block l yields draws 8l .. 8l+7: pair p from words 4p..4p+3 (u1 = words 4p, 4p+1; u2 = 4p+2, 4p+3).
        for (int p = 0; p < 4; p++) {
            for (int h = 0; h < 2; h++) {
#define HALF(v) (h == 0 ? __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) \
                        : __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15))
                v8d u1 = uniform53(HALF(x[4 * p]), HALF(x[4 * p + 1]));
                v8d u2 = uniform53(HALF(x[4 * p + 2]), HALF(x[4 * p + 3]));
#undef HALF
                v8d r = __builtin_elementwise_sqrt(-2.0 * log_v(u1));
                v8d s, c;
                sincos_v((2.0 * 3.14159265358979311600e+00) * u2, &s, &c);
                v8d g0 = r * c, g1 = r * s;
                for (int l = 0; l < 8; l++) {
                    batch[8 * (8 * h + l) + 2 * p] = g0[l];
                    batch[8 * (8 * h + l) + 2 * p + 1] = g1[l];
                }
            }
        }
        size_t n = count - done < 128 ? count - done : 128;
        if (out32) for (size_t i = 0; i < n; i++) out32[done + i] = (float)batch[i];
        if (out64) memcpy(out64 + done, batch, n * sizeof(double));
    }
}

WM_VARIANTS(gaussians, (const uint32_t key[8], size_t count, float *out32, double *out64),
            gaussians_body(key, count, out32, out64);, gaussians_body(key, count, out32, out64);)


void weightmark_keyed_gaussians(const uint32_t key[8], size_t count, float *out32, double *out64) {
    weightmark_keyed_gaussians_at_level(weightmark_vector_level(), key, count, out32, out64);
}

void weightmark_keyed_gaussians_at_level(int level, const uint32_t key[8], size_t count, float *out32, double *out64) {
    WM_DISPATCH(level, gaussians, (key, count, out32, out64));
}

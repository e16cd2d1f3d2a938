// Traitor tracing's inner loop: one recipient's score against the soft values read from a suspect copy.
// The recipient's code bits come from ChaCha20 keystream bytes (one byte per code position), so scoring
// 10^6 recipients is dominated by keystream generation; the comparison and the masked sum vectorize.
#include <stdlib.h>
#include <string.h>
#include "weightmark_kernels.h"
#include "weightmark_dispatch.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "keystream bytes are read in little-endian word order"
#endif

// sum over i < len of gain[i] where u[i] < t[i], into 16 partial sums. Branch-free (the comparison is a coin
// flip, so a branch would mispredict half the time): the mask scales the gain by 0 or 1, and the loop vectorizes.
#define TRACE_BODY                                                                  \
    size_t i = 0;                                                                   \
    for (; i + 16 <= len; i += 16) {                                                \
        for (int k = 0; k < 16; k++) lanes[k] += g[i + k] * (float)(u[i + k] < t[i + k]); \
    }                                                                               \
    for (; i < len; i++) lanes[i % 16] += g[i] * (float)(u[i] < t[i]);

WM_VARIANTS(trace_accumulate, (const uint8_t *u, const uint8_t *t, const float *g, size_t len, float *lanes), TRACE_BODY, TRACE_BODY)

static void trace_accumulate_dispatch(int level, const uint8_t *u, const uint8_t *t, const float *g, size_t len, float *lanes) {
    WM_DISPATCH(level, trace_accumulate, (u, t, g, len, lanes));
}

float weightmark_trace_score(const uint32_t key[8], size_t count, const uint8_t *thresholds, const float *gain) {
    static int level = -1;
    if (level < 0) level = weightmark_vector_level();
    uint32_t state[16] = {0x61707865u, 0x3320646Eu, 0x79622D32u, 0x6B206574u};
    for (int i = 0; i < 8; i++) state[4 + i] = key[i];
    state[12] = 0; state[13] = 0; state[14] = 0; state[15] = 0;
    uint32_t words[64];
    // 16 partial sums in a fixed order on every code path: the result does not depend on the CPU.
    float lanes[16] = {0};
    for (size_t base = 0; base < count; base += 256) {
        weightmark_chacha20_blocks4(state, words);
        state[12] += 4;
        size_t len = count - base < 256 ? count - base : 256;
        // Keystream bytes are the words' little-endian bytes (checked at the top of this file).
        trace_accumulate_dispatch(level, (const uint8_t *)words, thresholds + base, gain + base, len, lanes);
    }
    float total = 0;
    for (int k = 0; k < 16; k++) total += lanes[k];
    return total;
}

// One row: out[c] += signs[pos(c/64)] * scale * (+1 if chip bit c is 1, else -1). The product by ±1 is exact, so
// it is written as a flip of a's sign bit where the chip bit is 0: 16 columns at a time, each lane shifting its own
// bit out of the chip word (a vector shift by lane number), no branch and no int-to-float conversion. Bit for bit
// the same as a * (2 * bit - 1.0f) (including a signed zero). Columns past the last whole segment go one by one.
typedef uint32_t fp_v16u __attribute__((vector_size(64), aligned(4)));
typedef float fp_v16f __attribute__((vector_size(64), aligned(4)));
#define FINGERPRINT_ROW_BODY                                                        \
    const fp_v16u lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};    \
    size_t whole = n / 64;                                                          \
    for (size_t s = 0; s < whole; s++) {                                            \
        float a = scale * signs[positions[s] & position_mask];                      \
        uint32_t abits;                                                             \
        memcpy(&abits, &a, 4);                                                      \
        for (int q = 0; q < 4; q++) {                                               \
            uint32_t word = chips[2 * s + (q >> 1)];                                \
            fp_v16u bit = ((fp_v16u){0} + word) >> (lane + (uint32_t)((q & 1) * 16)); \
            fp_v16u flip = ((bit & 1u) ^ 1u) << 31;                                 \
            fp_v16f v = (fp_v16f)(((fp_v16u){0} + abits) ^ flip);                   \
            fp_v16f *dst = (fp_v16f *)(o + s * 64 + q * 16);                        \
            *dst = *dst + v;                                                        \
        }                                                                           \
    }                                                                               \
    for (size_t s = whole; s < segments; s++) {                                     \
        float a = scale * signs[positions[s] & position_mask];                      \
        size_t end = (s + 1) * 64 < n ? (s + 1) * 64 : n;                           \
        for (size_t c = s * 64; c < end; c++) {                                     \
            uint32_t bit = (chips[c >> 5] >> (c & 31)) & 1u;                        \
            o[c] += a * ((float)(int32_t)(bit << 1) - 1.0f);                        \
        }                                                                           \
    }

#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpsabi" // vector values stay inside each variant
WM_VARIANTS(fingerprint_row, (const uint32_t *positions, const uint32_t *chips, size_t segments, size_t n,
                              const float *signs, uint32_t position_mask, float scale, float *o),
            FINGERPRINT_ROW_BODY, FINGERPRINT_ROW_BODY)
#pragma clang diagnostic pop

static void fingerprint_row_dispatch(int level, const uint32_t *positions, const uint32_t *chips, size_t segments, size_t n,
                                     const float *signs, uint32_t position_mask, float scale, float *o) {
    WM_DISPATCH(level, fingerprint_row, (positions, chips, segments, n, signs, position_mask, scale, o));
}

// Keystream blocks [0, blocks) of ChaCha20(key, nonce LE32(row) || LE32(row >> 32) || 0) for the 16 rows
// first_row ... first_row + 15 at once, one row per vector lane: word w of block b of row first_row + l goes to
// out[l * stride + 16 * b + w]. The RFC 8439 block function, 16 rows wide
// (FingerprintCode.rowCodes derives the same words one row at a time).
typedef uint32_t ks_v16u __attribute__((vector_size(64)));
#define KS_ROTV(v, n) (((v) << (n)) | ((v) >> (32 - (n))))
#define KS_QRV(a, b, c, d)                                                      \
    a += b; d ^= a; d = KS_ROTV(d, 16); c += d; b ^= c; b = KS_ROTV(b, 12);     \
    a += b; d ^= a; d = KS_ROTV(d, 8);  c += d; b ^= c; b = KS_ROTV(b, 7);
#define ROWS_KEYSTREAM_BODY                                                     \
    ks_v16u s[16], x[16];                                                       \
    const uint32_t sigma[4] = {0x61707865u, 0x3320646Eu, 0x79622D32u, 0x6B206574u}; \
    for (int i = 0; i < 4; i++) s[i] = (ks_v16u){0} + sigma[i];                 \
    for (int i = 0; i < 8; i++) s[4 + i] = (ks_v16u){0} + key[i];               \
    for (int l = 0; l < 16; l++) {                                              \
        s[13][l] = (uint32_t)(first_row + (uint64_t)l);                         \
        s[14][l] = (uint32_t)((first_row + (uint64_t)l) >> 32);                 \
    }                                                                           \
    s[15] = (ks_v16u){0};                                                       \
    for (size_t b = 0; b < blocks; b++) {                                       \
        s[12] = (ks_v16u){0} + (uint32_t)b;                                     \
        for (int i = 0; i < 16; i++) x[i] = s[i];                               \
        for (int r = 0; r < 10; r++) {                                          \
            KS_QRV(x[0], x[4], x[8], x[12]) KS_QRV(x[1], x[5], x[9], x[13])     \
            KS_QRV(x[2], x[6], x[10], x[14]) KS_QRV(x[3], x[7], x[11], x[15])   \
            KS_QRV(x[0], x[5], x[10], x[15]) KS_QRV(x[1], x[6], x[11], x[12])   \
            KS_QRV(x[2], x[7], x[8], x[13]) KS_QRV(x[3], x[4], x[9], x[14])     \
        }                                                                       \
        for (int w = 0; w < 16; w++) {                                          \
            ks_v16u v = x[w] + s[w];                                            \
            for (int l = 0; l < 16; l++) out[(size_t)l * stride + 16 * b + (size_t)w] = v[l]; \
        }                                                                       \
    }

#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpsabi"
WM_VARIANTS(rows_keystream16, (const uint32_t key[8], uint64_t first_row, size_t blocks, uint32_t *out, size_t stride),
            ROWS_KEYSTREAM_BODY, ROWS_KEYSTREAM_BODY)
#pragma clang diagnostic pop

static void rows_keystream16_dispatch(int level, const uint32_t key[8], uint64_t first_row, size_t blocks, uint32_t *out, size_t stride) {
    WM_DISPATCH(level, rows_keystream16, (key, first_row, blocks, out, stride));
}

// Rows are taken 16 at a time: their position and chip keystreams come from one 16-lane ChaCha20 pass each (the
// rows' nonces differ, so a lane per row keeps every lane busy however narrow the matrix), then each row's
// fingerprint is added. Lanes past the last row are computed and ignored.
void weightmark_fingerprint_rows(const uint32_t position_key[8], const uint32_t chip_key[8], uint64_t first_row, size_t rows,
                                 size_t n, const float *signs, uint32_t position_mask, float scale, float *out) {
    static int level = -1;
    if (level < 0) level = weightmark_vector_level();
    size_t segments = (n + 63) / 64, chip_words = (n + 31) / 32;
    size_t position_blocks = (segments + 15) / 16, chip_blocks = (chip_words + 15) / 16;
    size_t position_stride = 16 * position_blocks, chip_stride = 16 * chip_blocks;
    uint32_t *scratch = malloc(16 * (position_stride + chip_stride) * sizeof(uint32_t));
    if (!scratch) abort();
    uint32_t *positions = scratch, *chips = scratch + 16 * position_stride;
    for (size_t r0 = 0; r0 < rows; r0 += 16) {
        rows_keystream16_dispatch(level, position_key, first_row + r0, position_blocks, positions, position_stride);
        rows_keystream16_dispatch(level, chip_key, first_row + r0, chip_blocks, chips, chip_stride);
        size_t lanes = rows - r0 < 16 ? rows - r0 : 16;
        for (size_t l = 0; l < lanes; l++) {
            fingerprint_row_dispatch(level, positions + l * position_stride, chips + l * chip_stride, segments, n, signs,
                                     position_mask, scale, out + (r0 + l) * n);
        }
    }
    free(scratch);
}

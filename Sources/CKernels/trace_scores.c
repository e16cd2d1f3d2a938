// Traitor tracing's inner loop: one recipient's score against the soft values read from a suspect copy.
// The recipient's code bits come from ChaCha20 keystream bytes (one byte per code position), so scoring
// 10^6 recipients is dominated by keystream generation; the comparison and the masked sum vectorize.
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

// Keystream words [0, count) of ChaCha20(key, nonce LE32(row) || LE32(row >> 32) || 0), counter 0.
static void row_keystream(const uint32_t key[8], uint64_t row, size_t count, uint32_t *out) {
    uint32_t state[16] = {0x61707865u, 0x3320646Eu, 0x79622D32u, 0x6B206574u};
    for (int i = 0; i < 8; i++) state[4 + i] = key[i];
    state[12] = 0;
    state[13] = (uint32_t)row;
    state[14] = (uint32_t)(row >> 32);
    state[15] = 0;
    uint32_t block[64];
    for (size_t filled = 0; filled < count; filled += 64) {
        weightmark_chacha20_blocks4(state, block);
        state[12] += 4;
        size_t take = count - filled < 64 ? count - filled : 64;
        memcpy(out + filled, block, take * sizeof(uint32_t));
    }
}

// One row: out[c] += signs[pos(c/64)] * scale * (+1 if chip bit c is 1, else -1). Branch-free (chip bits are
// coin flips): the sign is 2*bit - 1 as a float, an exact product.
#define FINGERPRINT_ROW_BODY                                                        \
    for (size_t s = 0; s < segments; s++) {                                         \
        float a = scale * signs[positions[s] & position_mask];                      \
        size_t end = (s + 1) * 64 < n ? (s + 1) * 64 : n;                           \
        for (size_t c = s * 64; c < end; c++) {                                     \
            uint32_t bit = (chips[c >> 5] >> (c & 31)) & 1u;                        \
            o[c] += a * ((float)(int32_t)(bit << 1) - 1.0f);                        \
        }                                                                           \
    }

WM_VARIANTS(fingerprint_row, (const uint32_t *positions, const uint32_t *chips, size_t segments, size_t n,
                              const float *signs, uint32_t position_mask, float scale, float *o),
            FINGERPRINT_ROW_BODY, FINGERPRINT_ROW_BODY)

static void fingerprint_row_dispatch(int level, const uint32_t *positions, const uint32_t *chips, size_t segments, size_t n,
                                     const float *signs, uint32_t position_mask, float scale, float *o) {
    WM_DISPATCH(level, fingerprint_row, (positions, chips, segments, n, signs, position_mask, scale, o));
}

void weightmark_fingerprint_rows(const uint32_t position_key[8], const uint32_t chip_key[8], uint64_t first_row, size_t rows,
                                 size_t n, const float *signs, uint32_t position_mask, float scale, float *out) {
    static int level = -1;
    if (level < 0) level = weightmark_vector_level();
    size_t segments = (n + 63) / 64, chip_words = (n + 31) / 32;
    uint32_t positions[segments + 1], chips[chip_words + 1];
    for (size_t r = 0; r < rows; r++) {
        row_keystream(position_key, first_row + r, segments, positions);
        row_keystream(chip_key, first_row + r, chip_words, chips);
        fingerprint_row_dispatch(level, positions, chips, segments, n, signs, position_mask, scale, out + r * n);
    }
}

// Traitor tracing's inner loop: one recipient's score against the soft values read from a suspect copy.
// The recipient's code bits come from ChaCha20 keystream bytes (one byte per code position), so scoring
// 10^6 recipients is dominated by keystream generation; the comparison and the masked sum vectorize.
#include <string.h>
#include "weightmark_kernels.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "keystream bytes are read in little-endian word order"
#endif

float weightmark_trace_score(const uint32_t key[8], size_t count, const uint8_t *thresholds, const float *gain) {
    uint32_t state[16] = {0x61707865u, 0x3320646Eu, 0x79622D32u, 0x6B206574u};
    for (int i = 0; i < 8; i++) state[4 + i] = key[i];
    state[12] = 0; state[13] = 0; state[14] = 0; state[15] = 0;
    uint32_t words[64];
    uint8_t bytes[256];
    // 16 partial sums: the order of additions is fixed, so the result does not depend on the code path.
    float lanes[16] = {0};
    for (size_t base = 0; base < count; base += 256) {
        weightmark_chacha20_blocks4(state, words);
        state[12] += 4;
        memcpy(bytes, words, sizeof bytes);
        size_t len = count - base < 256 ? count - base : 256;
        const uint8_t *t = thresholds + base;
        const float *g = gain + base;
        size_t i = 0;
        for (; i + 16 <= len; i += 16) {
            for (int k = 0; k < 16; k++) lanes[k] += bytes[i + k] < t[i + k] ? g[i + k] : 0.0f;
        }
        for (; i < len; i++) lanes[i % 16] += bytes[i] < t[i] ? g[i] : 0.0f;
    }
    float total = 0;
    for (int k = 0; k < 16; k++) total += lanes[k];
    return total;
}

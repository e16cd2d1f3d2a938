// ChaCha20 block function, four blocks at a time (one per 32-bit lane). SSE2 where available, portable C
// otherwise; both give the RFC 8439 keystream.
#include "weightmark_kernels.h"

#if defined(__SSE2__)
#include <emmintrin.h>

#define ROTL(v, n) _mm_or_si128(_mm_slli_epi32((v), (n)), _mm_srli_epi32((v), 32 - (n)))
#define QR(a, b, c, d)                                   \
    a = _mm_add_epi32(a, b); d = _mm_xor_si128(d, a); d = ROTL(d, 16); \
    c = _mm_add_epi32(c, d); b = _mm_xor_si128(b, c); b = ROTL(b, 12); \
    a = _mm_add_epi32(a, b); d = _mm_xor_si128(d, a); d = ROTL(d, 8);  \
    c = _mm_add_epi32(c, d); b = _mm_xor_si128(b, c); b = ROTL(b, 7);

void weightmark_chacha20_blocks4(const uint32_t state[16], uint32_t out[64]) {
    __m128i s[16], x[16];
    for (int i = 0; i < 16; i++) s[i] = _mm_set1_epi32((int)state[i]);
    s[12] = _mm_add_epi32(s[12], _mm_set_epi32(3, 2, 1, 0));
    for (int i = 0; i < 16; i++) x[i] = s[i];
    for (int r = 0; r < 10; r++) {
        QR(x[0], x[4], x[8], x[12]) QR(x[1], x[5], x[9], x[13]) QR(x[2], x[6], x[10], x[14]) QR(x[3], x[7], x[11], x[15])
        QR(x[0], x[5], x[10], x[15]) QR(x[1], x[6], x[11], x[12]) QR(x[2], x[7], x[8], x[13]) QR(x[3], x[4], x[9], x[14])
    }
    for (int w = 0; w < 16; w++) {
        uint32_t lanes[4];
        _mm_storeu_si128((__m128i *)lanes, _mm_add_epi32(x[w], s[w]));
        out[w] = lanes[0]; out[16 + w] = lanes[1]; out[32 + w] = lanes[2]; out[48 + w] = lanes[3];
    }
}

#else

static inline uint32_t rotl32(uint32_t v, int n) { return (v << n) | (v >> (32 - n)); }
#define QRS(a, b, c, d) \
    a += b; d ^= a; d = rotl32(d, 16); c += d; b ^= c; b = rotl32(b, 12); \
    a += b; d ^= a; d = rotl32(d, 8);  c += d; b ^= c; b = rotl32(b, 7);

void weightmark_chacha20_blocks4(const uint32_t state[16], uint32_t out[64]) {
    for (int k = 0; k < 4; k++) {
        uint32_t x[16], s[16];
        for (int i = 0; i < 16; i++) s[i] = state[i];
        s[12] += (uint32_t)k;
        for (int i = 0; i < 16; i++) x[i] = s[i];
        for (int r = 0; r < 10; r++) {
            QRS(x[0], x[4], x[8], x[12]) QRS(x[1], x[5], x[9], x[13]) QRS(x[2], x[6], x[10], x[14]) QRS(x[3], x[7], x[11], x[15])
            QRS(x[0], x[5], x[10], x[15]) QRS(x[1], x[6], x[11], x[12]) QRS(x[2], x[7], x[8], x[13]) QRS(x[3], x[4], x[9], x[14])
        }
        for (int w = 0; w < 16; w++) out[16 * k + w] = x[w] + s[w];
    }
}
#endif

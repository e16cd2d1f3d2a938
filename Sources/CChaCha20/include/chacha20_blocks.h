#ifndef WEIGHTMARK_CHACHA20_BLOCKS_H
#define WEIGHTMARK_CHACHA20_BLOCKS_H
#include <stdint.h>

/// Four consecutive ChaCha20 blocks (RFC 8439 section 2.3) for block counters state[12] .. state[12]+3:
/// 64 little-endian words, block after block. `state` holds the 16 input words.
void weightmark_chacha20_blocks4(const uint32_t state[16], uint32_t out[64]);

#endif

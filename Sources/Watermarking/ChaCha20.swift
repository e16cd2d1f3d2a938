import CKernels

/// The ChaCha20 block function and keystream (RFC 8439 §2.3–2.4), used as the watermark's keyed
/// pseudo-random generator. Checked against the RFC's test vectors.
public struct ChaCha20: Sendable {
    private var state: SIMD16<UInt32>     // constants, key, counter, nonce
    private var words = [UInt32](repeating: 0, count: 64) // four consecutive keystream blocks
    private var position = 64              // next unread word of `words`

    /// - Parameters:
    ///   - key: 32 bytes.
    ///   - nonce: 12 bytes.
    ///   - counter: initial block counter.
    public init(key: [UInt8], nonce: [UInt8] = Array(repeating: 0, count: 12), counter: UInt32 = 0) {
        precondition(key.count == 32 && nonce.count == 12, "ChaCha20 needs a 32-byte key and a 12-byte nonce")
        func word(_ b: [UInt8], _ i: Int) -> UInt32 {
            UInt32(b[4 * i]) | UInt32(b[4 * i + 1]) << 8 | UInt32(b[4 * i + 2]) << 16 | UInt32(b[4 * i + 3]) << 24
        }
        state = SIMD16<UInt32>()
        state[0] = 0x6170_7865; state[1] = 0x3320_646E; state[2] = 0x7962_2D32; state[3] = 0x6B20_6574
        for i in 0..<8 { state[4 + i] = word(key, i) }
        state[12] = counter
        for i in 0..<3 { state[13 + i] = word(nonce, i) }
    }

    /// Four consecutive blocks (counters c…c+3), RFC 8439 §2.3, written to `out` (64 words, block after
    /// block). The rounds run in C (`CKernels`), four blocks per SSE2 register.
    static func blocks4(_ input: SIMD16<UInt32>, into out: UnsafeMutablePointer<UInt32>) {
        withUnsafeBytes(of: input) { raw in
            weightmark_chacha20_blocks4(raw.baseAddress!.assumingMemoryBound(to: UInt32.self), out)
        }
    }

    /// Next 32 bits of keystream (little-endian word order within each block).
    @inline(__always)
    public mutating func nextWord() -> UInt32 {
        if position == 64 {
            let st = state
            words.withUnsafeMutableBufferPointer { ChaCha20.blocks4(st, into: $0.baseAddress!) }
            state[12] &+= 4
            position = 0
        }
        defer { position += 1 }
        return words[position]
    }

    /// Next 64 bits: two consecutive words, the first as the low half.
    @inline(__always)
    public mutating func nextUInt64() -> UInt64 {
        if position <= 62 {
            // Fast path: both words are in the current batch.
            let p = position
            position += 2
            return words.withUnsafeBufferPointer { UInt64($0[p]) | UInt64($0[p + 1]) << 32 }
        }
        let lo = UInt64(nextWord())
        return lo | UInt64(nextWord()) << 32
    }

    /// Keystream bytes.
    public mutating func nextBytes(_ count: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            let w = nextWord()
            for k in 0..<4 where out.count < count { out.append(UInt8(truncatingIfNeeded: w >> (8 * UInt32(k)))) }
        }
        return out
    }
}

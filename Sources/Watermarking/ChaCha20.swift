/// The ChaCha20 block function and keystream (RFC 8439 §2.3–2.4), used as the watermark's keyed
/// pseudo-random generator. Checked against the RFC's test vectors.
public struct ChaCha20: Sendable {
    private var state: [UInt32]      // 16 words: constants, key, counter, nonce
    private var block: [UInt32] = Array(repeating: 0, count: 16)
    private var position = 16        // next unread word of `block`

    /// - Parameters:
    ///   - key: 32 bytes.
    ///   - nonce: 12 bytes.
    ///   - counter: initial block counter.
    public init(key: [UInt8], nonce: [UInt8] = Array(repeating: 0, count: 12), counter: UInt32 = 0) {
        precondition(key.count == 32 && nonce.count == 12, "ChaCha20 needs a 32-byte key and a 12-byte nonce")
        func word(_ b: [UInt8], _ i: Int) -> UInt32 {
            UInt32(b[4 * i]) | UInt32(b[4 * i + 1]) << 8 | UInt32(b[4 * i + 2]) << 16 | UInt32(b[4 * i + 3]) << 24
        }
        state = [0x6170_7865, 0x3320_646E, 0x7962_2D32, 0x6B20_6574]
        for i in 0..<8 { state.append(word(key, i)) }
        state.append(counter)
        for i in 0..<3 { state.append(word(nonce, i)) }
    }

    /// The 64-byte keystream block for the current counter, as 16 little-endian words.
    public static func block(_ input: [UInt32]) -> [UInt32] {
        var x = input
        @inline(__always) func quarter(_ a: Int, _ b: Int, _ c: Int, _ d: Int) {
            x[a] &+= x[b]; x[d] ^= x[a]; x[d] = x[d] << 16 | x[d] >> 16
            x[c] &+= x[d]; x[b] ^= x[c]; x[b] = x[b] << 12 | x[b] >> 20
            x[a] &+= x[b]; x[d] ^= x[a]; x[d] = x[d] << 8 | x[d] >> 24
            x[c] &+= x[d]; x[b] ^= x[c]; x[b] = x[b] << 7 | x[b] >> 25
        }
        for _ in 0..<10 {
            quarter(0, 4, 8, 12); quarter(1, 5, 9, 13); quarter(2, 6, 10, 14); quarter(3, 7, 11, 15)
            quarter(0, 5, 10, 15); quarter(1, 6, 11, 12); quarter(2, 7, 8, 13); quarter(3, 4, 9, 14)
        }
        for i in 0..<16 { x[i] &+= input[i] }
        return x
    }

    /// Next 32 bits of keystream (little-endian word order within each block).
    public mutating func nextWord() -> UInt32 {
        if position == 16 {
            block = ChaCha20.block(state)
            state[12] &+= 1
            position = 0
        }
        defer { position += 1 }
        return block[position]
    }

    /// Next 64 bits: two consecutive words, the first as the low half.
    public mutating func nextUInt64() -> UInt64 {
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

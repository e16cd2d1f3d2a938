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

    /// Four consecutive blocks (counters c…c+3) computed together, one block per SIMD lane (RFC 8439 §2.3:
    /// 20 rounds, then the input added back), written to `out` (64 words, block after block).
    static func blocks4(_ input: SIMD16<UInt32>, into out: UnsafeMutablePointer<UInt32>) {
        typealias V = SIMD4<UInt32>
        let s0 = V(repeating: input[0]), s1 = V(repeating: input[1]), s2 = V(repeating: input[2]), s3 = V(repeating: input[3])
        let s4 = V(repeating: input[4]), s5 = V(repeating: input[5]), s6 = V(repeating: input[6]), s7 = V(repeating: input[7])
        let s8 = V(repeating: input[8]), s9 = V(repeating: input[9]), s10 = V(repeating: input[10]), s11 = V(repeating: input[11])
        let s12 = V(repeating: input[12]) &+ V(0, 1, 2, 3)
        let s13 = V(repeating: input[13]), s14 = V(repeating: input[14]), s15 = V(repeating: input[15])
        var x0 = s0, x1 = s1, x2 = s2, x3 = s3, x4 = s4, x5 = s5, x6 = s6, x7 = s7
        var x8 = s8, x9 = s9, x10 = s10, x11 = s11, x12 = s12, x13 = s13, x14 = s14, x15 = s15
        @inline(__always) func rotl(_ v: V, _ n: UInt32) -> V { (v &<< V(repeating: n)) | (v &>> V(repeating: 32 - n)) }
        @inline(__always) func quarter(_ a: inout V, _ b: inout V, _ c: inout V, _ d: inout V) {
            a &+= b; d = rotl(d ^ a, 16)
            c &+= d; b = rotl(b ^ c, 12)
            a &+= b; d = rotl(d ^ a, 8)
            c &+= d; b = rotl(b ^ c, 7)
        }
        for _ in 0..<10 {
            quarter(&x0, &x4, &x8, &x12); quarter(&x1, &x5, &x9, &x13); quarter(&x2, &x6, &x10, &x14); quarter(&x3, &x7, &x11, &x15)
            quarter(&x0, &x5, &x10, &x15); quarter(&x1, &x6, &x11, &x12); quarter(&x2, &x7, &x8, &x13); quarter(&x3, &x4, &x9, &x14)
        }
        let v: [V] = [x0 &+ s0, x1 &+ s1, x2 &+ s2, x3 &+ s3, x4 &+ s4, x5 &+ s5, x6 &+ s6, x7 &+ s7,
                      x8 &+ s8, x9 &+ s9, x10 &+ s10, x11 &+ s11, x12 &+ s12, x13 &+ s13, x14 &+ s14, x15 &+ s15]
        for w in 0..<16 {
            let vw = v[w]
            out[w] = vw[0]; out[16 + w] = vw[1]; out[32 + w] = vw[2]; out[48 + w] = vw[3]
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

/// Dequantizers of ggml's block formats, operating on one row (a multiple of the block size).
///
/// Dequantization matches ggml for every type listed in `supportedForDecoding` (the IQ, ternary and FP4 families in
/// `GGMLBlockCodec+LowBit.swift`). Reading needs nothing else; the quantizers live in the Conversion module
/// (`GGMLQuantizer`), with the GGUF writer.
public enum GGMLBlockCodec {
    /// Types this codec can dequantize.
    public static let supportedForDecoding: Set<GGMLType> = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1,
                                                              .q2_K, .q3_K, .q4_K, .q5_K, .q6_K,
                                                              .iq2_XXS, .iq2_XS, .iq2_S, .iq3_XXS, .iq3_S, .iq1_S, .iq1_M,
                                                              .iq4_NL, .iq4_XS, .tq1_0, .tq2_0, .mxfp4, .nvfp4, .q1_0, .q2_0]

    @inline(__always) package static func half(_ x: Float) -> UInt16 { Float16(x).bitPattern }
    @inline(__always) package static func unhalf(_ b: UInt16) -> Float { FloatConversion.halfTable[Int(b)] }
    /// ggml's `nearest_int`: round to nearest, ties to even (exact for |x| < 2²²).
    @inline(__always) package static func nearestInt(_ x: Float) -> Int { Int(x.rounded(.toNearestOrEven)) }


    /// 6-bit scale and min of sub-block j from Q4_K's packed 12 bytes (ggml `get_scale_min_k4`).
    @inline(__always)
    package static func scaleMinK4(_ j: Int, _ q: UnsafeRawBufferPointer) -> (UInt8, UInt8) {
        if j < 4 { return (q[j] & 63, q[j + 4] & 63) }
        return ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }


    // MARK: Dequantization

    /// Dequantizes `count` elements of `type` from raw bytes.
    /// - Precondition: `type` is in `supportedForDecoding`; `bytes` holds exactly the blocks for `count`.
    public static func dequantize(_ bytes: UnsafeRawBufferPointer, as type: GGMLType, count: Int) -> [Float] {
        let (qk, size) = type.blockLayout
        precondition(count % qk == 0 && bytes.count == count / qk * size, "\(type.name): byte count does not match \(count) elements")
        switch type {
        case .f32: return FloatConversion.decode(bytes, dtype: .f32)
        case .f16: return FloatConversion.decode(bytes, dtype: .f16)
        case .bf16: return FloatConversion.decode(bytes, dtype: .bf16)
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1: break
        default: return dequantizeLowBit(bytes, as: type, count: count)
        }
        var out = [Float](repeating: 0, count: count)
        for b in 0..<(count / qk) {
            let y = UnsafeRawBufferPointer(rebasing: bytes[(b * size)..<((b + 1) * size)])
            let base = b * qk
            let d = unhalf(y.loadUnaligned(fromByteOffset: 0, as: UInt16.self).littleEndian)
            switch type {
            case .q2_K:
                // {scales[16], qs[64], d, dmin}
                let d2 = unhalf(y.loadUnaligned(fromByteOffset: 80, as: UInt16.self).littleEndian)
                let dmin = unhalf(y.loadUnaligned(fromByteOffset: 82, as: UInt16.self).littleEndian)
                for e in 0..<256 {
                    let chunk = e / 128, shift = (e % 128) / 32, l = e % 32
                    let q = (y[16 + 32 * chunk + l] >> UInt8(2 * shift)) & 3
                    let sc = y[e / 16]
                    let dl = d2 * Float(sc & 0xF), ml = dmin * Float(sc >> 4)
                    out[base + e] = dl * Float(q) - ml
                }
            case .q3_K:
                // {hmask[32], qs[64], scales[12], d}
                let d3 = unhalf(y.loadUnaligned(fromByteOffset: 108, as: UInt16.self).littleEndian)
                var scales = [Float](repeating: 0, count: 16)
                for k in 0..<16 {
                    let ls = k < 8 ? (y[96 + k] & 0xF) : (y[96 + k - 8] >> 4)
                    let hs = (y[96 + 8 + k % 4] >> UInt8(2 * (k / 4))) & 3
                    scales[k] = d3 * Float(Int(ls | (hs << 4)) - 32)
                }
                for e in 0..<256 {
                    let chunk = e / 128, shift = (e % 128) / 32, l = e % 32
                    let low = Int((y[32 + 32 * chunk + l] >> UInt8(2 * shift)) & 3)
                    let high = Int((y[e % 32] >> UInt8(e / 32)) & 1)
                    out[base + e] = scales[e / 16] * Float(low - ((high ^ 1) << 2))
                }
            case .q5_K:
                // {d, dmin, scales[12], qh[32], qs[128]}
                let dmin = unhalf(y.loadUnaligned(fromByteOffset: 2, as: UInt16.self).littleEndian)
                let scales = UnsafeRawBufferPointer(rebasing: y[4..<16])
                for j in 0..<8 {
                    let (sc, m) = scaleMinK4(j, scales)
                    let dj = d * Float(sc), mj = dmin * Float(m)
                    for l in 0..<32 {
                        let byte = y[48 + 32 * (j / 2) + l]
                        let low = j % 2 == 0 ? byte & 0xF : byte >> 4
                        let high = (y[16 + l] >> UInt8(j)) & 1
                        out[base + 32 * j + l] = dj * Float(low | (high << 4)) - mj
                    }
                }
            case .q8_0:
                for j in 0..<32 { out[base + j] = d * Float(Int8(bitPattern: y[2 + j])) }
            case .q4_0:
                for j in 0..<16 {
                    out[base + j] = d * Float(Int(y[2 + j] & 0xF) - 8)
                    out[base + j + 16] = d * Float(Int(y[2 + j] >> 4) - 8)
                }
            case .q4_1:
                let m = unhalf(y.loadUnaligned(fromByteOffset: 2, as: UInt16.self).littleEndian)
                for j in 0..<16 {
                    out[base + j] = d * Float(y[4 + j] & 0xF) + m
                    out[base + j + 16] = d * Float(y[4 + j] >> 4) + m
                }
            case .q5_0, .q5_1:
                let affine = type == .q5_1
                let m = affine ? unhalf(y.loadUnaligned(fromByteOffset: 2, as: UInt16.self).littleEndian) : 0
                let o = affine ? 4 : 2
                let qh = y.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian
                for j in 0..<16 {
                    let lo = Int(y[o + 4 + j] & 0xF) | Int((qh >> UInt32(j)) & 1) << 4
                    let hi = Int(y[o + 4 + j] >> 4) | Int((qh >> UInt32(j + 16)) & 1) << 4
                    if affine {
                        out[base + j] = d * Float(lo) + m
                        out[base + j + 16] = d * Float(hi) + m
                    } else {
                        out[base + j] = d * Float(lo - 16)
                        out[base + j + 16] = d * Float(hi - 16)
                    }
                }
            case .q4_K:
                let dmin = unhalf(y.loadUnaligned(fromByteOffset: 2, as: UInt16.self).littleEndian)
                let scales = UnsafeRawBufferPointer(rebasing: y[4..<16])
                for chunk in 0..<4 {
                    let (sc1, m1) = scaleMinK4(2 * chunk, scales)
                    let (sc2, m2) = scaleMinK4(2 * chunk + 1, scales)
                    let d1 = d * Float(sc1), mm1 = dmin * Float(m1)
                    let d2 = d * Float(sc2), mm2 = dmin * Float(m2)
                    for l in 0..<32 {
                        let q = y[16 + 32 * chunk + l]
                        out[base + 64 * chunk + l] = d1 * Float(q & 0xF) - mm1
                        out[base + 64 * chunk + 32 + l] = d2 * Float(q >> 4) - mm2
                    }
                }
            case .q6_K:
                // {ql[128], qh[64], scales[16] (int8), d (f16)}: d is last.
                let d6 = unhalf(y.loadUnaligned(fromByteOffset: 208, as: UInt16.self).littleEndian)
                for half in 0..<2 {
                    let ql = 64 * half, qh = 128 + 32 * half, sc = 192 + 8 * half
                    for l in 0..<32 {
                        let isc = l / 16
                        let q1 = Int((y[ql + l] & 0xF) | ((y[qh + l] >> 0) & 3) << 4) - 32
                        let q2 = Int((y[ql + l + 32] & 0xF) | ((y[qh + l] >> 2) & 3) << 4) - 32
                        let q3 = Int((y[ql + l] >> 4) | ((y[qh + l] >> 4) & 3) << 4) - 32
                        let q4 = Int((y[ql + l + 32] >> 4) | ((y[qh + l] >> 6) & 3) << 4) - 32
                        let o = base + 128 * half + l
                        out[o] = d6 * Float(Int8(bitPattern: y[sc + isc])) * Float(q1)
                        out[o + 32] = d6 * Float(Int8(bitPattern: y[sc + isc + 2])) * Float(q2)
                        out[o + 64] = d6 * Float(Int8(bitPattern: y[sc + isc + 4])) * Float(q3)
                        out[o + 96] = d6 * Float(Int8(bitPattern: y[sc + isc + 6])) * Float(q4)
                    }
                }
            default:
                preconditionFailure("\(type.name) dequantization is not supported")
            }
        }
        return out
    }
}

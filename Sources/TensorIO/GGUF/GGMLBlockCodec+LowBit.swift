/// Dequantizers of ggml's lattice (IQ), ternary (TQ), 1–2-bit (Q1_0, Q2_0) and FP4 (MXFP4, NVFP4) block types.
///
/// Each follows ggml's `dequantize_row_*` block layout and does the same `Float` operations in the same order
/// (scale first, then value, then sign), so the results are bit-identical with llama.cpp's and the PyPI `gguf`
/// package's dequantizers (checked per type by an interop test on files written by llama.cpp's quantizer).
extension GGMLBlockCodec {
    /// ggml's `kvalues_iq4nl`: the 16 non-linear levels of IQ4_NL and IQ4_XS.
    static let iq4nlLevels: [Float] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
    /// ggml's `kvalues_mxfp4`: E2M1 values doubled (the block scale carries the half).
    static let fp4Levels: [Float] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]

    /// ggml's `ksigns_iq2xs`: seven sign bits plus an eighth that makes the count of minus signs even.
    @inline(__always)
    static func evenSigns(_ i: UInt32) -> UInt8 {
        let low = UInt8(i & 0x7F)
        return low | (low.nonzeroBitCount % 2 == 1 ? 0x80 : 0)
    }

    @inline(__always) static func sign(_ bits: UInt8, _ j: Int) -> Float { (bits >> UInt8(j)) & 1 == 0 ? 1 : -1 }

    @inline(__always)
    static func u16(_ y: UnsafeRawBufferPointer, _ o: Int) -> UInt16 { y.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian }
    @inline(__always)
    static func u32(_ y: UnsafeRawBufferPointer, _ o: Int) -> UInt32 { y.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian }

    /// ggml's `ggml_e8m0_to_fp32_half`: 2^(e − 128) as a float, denormal for e < 2.
    @inline(__always)
    static func e8m0Half(_ e: UInt8) -> Float {
        Float(bitPattern: e < 2 ? UInt32(0x0020_0000) << UInt32(e) : UInt32(e - 1) << 23)
    }

    /// ggml's `ggml_ue4m3_to_fp32`: unsigned E4M3 (bias 7), halved; 0 and 0x7F decode to zero.
    @inline(__always)
    static func ue4m3Half(_ x: UInt8) -> Float {
        if x == 0 || x == 0x7F { return 0 }
        let exp = Int((x >> 3) & 0xF), man = Float(x & 7)
        let raw: Float = exp == 0 ? man * 0x1p-9 : (1 + man / 8) * Float(sign: .plus, exponent: exp - 7, significand: 1)
        return raw * 0.5
    }

    static func dequantizeLowBit(_ bytes: UnsafeRawBufferPointer, as type: GGMLType, count: Int) -> [Float] {
        let (qk, size) = type.blockLayout
        return [Float](unsafeUninitializedCapacity: count) { out, initialized in
            for b in 0..<(count / qk) {
                let y = UnsafeRawBufferPointer(rebasing: bytes[(b * size)..<((b + 1) * size)])
                let o = UnsafeMutableBufferPointer(rebasing: out[(b * qk)..<((b + 1) * qk)])
                switch type {
                case .iq2_XXS: decodeIQ2XXS(y, o)
                case .iq2_XS: decodeIQ2XS(y, o)
                case .iq2_S: decodeIQ2S(y, o)
                case .iq3_XXS: decodeIQ3XXS(y, o)
                case .iq3_S: decodeIQ3S(y, o)
                case .iq1_S: decodeIQ1S(y, o)
                case .iq1_M: decodeIQ1M(y, o)
                case .iq4_NL:
                    let d = unhalf(u16(y, 0))
                    for j in 0..<16 {
                        o[j] = d * iq4nlLevels[Int(y[2 + j] & 0xF)]
                        o[j + 16] = d * iq4nlLevels[Int(y[2 + j] >> 4)]
                    }
                case .iq4_XS: decodeIQ4XS(y, o)
                case .tq1_0: decodeTQ1(y, o)
                case .tq2_0:
                    // {qs[64], d}: byte 32c + m holds elements 128c + 32l + m in bits 2l…2l+1, stored +1.
                    let d = unhalf(u16(y, 64))
                    for c in 0..<2 { for l in 0..<4 { for m in 0..<32 {
                        o[128 * c + 32 * l + m] = d * Float(Int((y[32 * c + m] >> UInt8(2 * l)) & 3) - 1)
                    } } }
                case .mxfp4:
                    let d = e8m0Half(y[0])
                    for j in 0..<16 {
                        o[j] = d * fp4Levels[Int(y[1 + j] & 0xF)]
                        o[j + 16] = d * fp4Levels[Int(y[1 + j] >> 4)]
                    }
                case .nvfp4:
                    // {d[4] (UE4M3, one per 16 values), qs[32]}
                    for s in 0..<4 {
                        let d = ue4m3Half(y[s])
                        for j in 0..<8 {
                            let q = y[4 + 8 * s + j]
                            o[16 * s + j] = fp4Levels[Int(q & 0xF)] * d
                            o[16 * s + j + 8] = fp4Levels[Int(q >> 4)] * d
                        }
                    }
                case .q1_0:
                    // {d, qs[16]}: one sign bit per value, ±d.
                    let d = unhalf(u16(y, 0))
                    for j in 0..<128 { o[j] = (y[2 + j / 8] >> UInt8(j % 8)) & 1 == 1 ? d : -d }
                case .q2_0:
                    // {d, qs[16]}: two bits per value, levels −1, 0, 1, 2.
                    let d = unhalf(u16(y, 0))
                    for j in 0..<64 { o[j] = Float(Int((y[2 + j / 4] >> UInt8(2 * (j % 4))) & 3) - 1) * d }
                default:
                    preconditionFailure("\(type.name) dequantization is not supported")
                }
            }
            initialized = count
        }
    }

    /// {d, qs: 8 × (4 grid indices as bytes, u32 of 4 × 7 sign bits + 4-bit scale)}.
    static func decodeIQ2XXS(_ y: UnsafeRawBufferPointer, _ o: UnsafeMutableBufferPointer<Float>) {
        let d = unhalf(u16(y, 0))
        for ib in 0..<8 {
            let aux1 = u32(y, 2 + 8 * ib + 4)
            let db = d * (0.5 + Float(aux1 >> 28)) * 0.25
            for l in 0..<4 {
                let g = Int(y[2 + 8 * ib + l]) * 8
                let signs = evenSigns(aux1 >> UInt32(7 * l))
                for j in 0..<8 { o[32 * ib + 8 * l + j] = db * Float(GGMLGrids.iq2xxs[g + j]) * sign(signs, j) }
            }
        }
    }

    /// {d, qs[32] (u16: 9-bit grid index, 7 sign bits), scales[8] (two 4-bit scales each)}.
    static func decodeIQ2XS(_ y: UnsafeRawBufferPointer, _ o: UnsafeMutableBufferPointer<Float>) {
        let d = unhalf(u16(y, 0))
        for ib in 0..<8 {
            let sc = y[66 + ib]
            let db = (d * (0.5 + Float(sc & 0xF)) * 0.25, d * (0.5 + Float(sc >> 4)) * 0.25)
            for l in 0..<4 {
                let q = u16(y, 2 + 2 * (4 * ib + l))
                let g = Int(q & 511) * 8
                let signs = evenSigns(UInt32(q >> 9))
                let dl = l < 2 ? db.0 : db.1
                for j in 0..<8 { o[32 * ib + 8 * l + j] = dl * Float(GGMLGrids.iq2xs[g + j]) * sign(signs, j) }
            }
        }
    }

    /// {d, qs[32] (grid index low bits), signs[32], qh[8] (2 high bits per index), scales[8]}.
    static func decodeIQ2S(_ y: UnsafeRawBufferPointer, _ o: UnsafeMutableBufferPointer<Float>) {
        let d = unhalf(u16(y, 0))
        for ib in 0..<8 {
            let sc = y[74 + ib]
            let db = (d * (0.5 + Float(sc & 0xF)) * 0.25, d * (0.5 + Float(sc >> 4)) * 0.25)
            let qh = Int(y[66 + ib])
            for l in 0..<4 {
                let g = (Int(y[2 + 4 * ib + l]) | ((qh << (8 - 2 * l)) & 0x300)) * 8
                let signs = y[34 + 4 * ib + l]
                let dl = l < 2 ? db.0 : db.1
                for j in 0..<8 { o[32 * ib + 8 * l + j] = dl * Float(GGMLGrids.iq2s[g + j]) * sign(signs, j) }
            }
        }
    }

    /// {d, qs[64] (grid indices), 8 × u32 (4 × 7 sign bits + 4-bit scale)}.
    static func decodeIQ3XXS(_ y: UnsafeRawBufferPointer, _ o: UnsafeMutableBufferPointer<Float>) {
        let d = unhalf(u16(y, 0))
        for ib in 0..<8 {
            let aux = u32(y, 66 + 4 * ib)
            let db = d * (0.5 + Float(aux >> 28)) * 0.5
            for l in 0..<4 {
                let signs = evenSigns(aux >> UInt32(7 * l))
                let g1 = Int(y[2 + 8 * ib + 2 * l]) * 4, g2 = Int(y[2 + 8 * ib + 2 * l + 1]) * 4
                for j in 0..<4 {
                    o[32 * ib + 8 * l + j] = db * Float(GGMLGrids.iq3xxs[g1 + j]) * sign(signs, j)
                    o[32 * ib + 8 * l + j + 4] = db * Float(GGMLGrids.iq3xxs[g2 + j]) * sign(signs, j + 4)
                }
            }
        }
    }

    /// {d, qs[64] (grid index low bits), qh[8] (ninth bits), signs[32], scales[4]}.
    static func decodeIQ3S(_ y: UnsafeRawBufferPointer, _ o: UnsafeMutableBufferPointer<Float>) {
        let d = unhalf(u16(y, 0))
        for ib in 0..<8 {
            let sc = y[106 + ib / 2]
            let db = d * Float(1 + 2 * Int(ib % 2 == 0 ? sc & 0xF : sc >> 4))
            let qh = Int(y[66 + ib])
            for k in 0..<8 {
                let g = (Int(y[2 + 8 * ib + k]) | (((qh >> k) & 1) << 8)) * 4
                let signs = y[74 + 4 * ib + k / 2]
                for j in 0..<4 {
                    o[32 * ib + 4 * k + j] = db * Float(GGMLGrids.iq3s[g + j]) * sign(signs, 4 * (k % 2) + j)
                }
            }
        }
    }

    /// {d, qs[32] (grid index low bits), qh[8] (u16: 4 × 3 high bits, 3-bit scale, delta sign)}.
    static func decodeIQ1S(_ y: UnsafeRawBufferPointer, _ o: UnsafeMutableBufferPointer<Float>) {
        let d = unhalf(u16(y, 0))
        for ib in 0..<8 {
            let qh = Int(u16(y, 34 + 2 * ib))
            let dl = d * Float(2 * ((qh >> 12) & 7) + 1)
            let delta: Float = qh & 0x8000 != 0 ? -0.125 : 0.125
            for l in 0..<4 {
                let g = (Int(y[2 + 4 * ib + l]) | (((qh >> (3 * l)) & 7) << 8)) * 8
                for j in 0..<8 { o[32 * ib + 8 * l + j] = dl * (Float(GGMLGrids.iq1s[g + j]) + delta) }
            }
        }
    }

    /// {qs[32], qh[16] (3 high index bits + delta sign per 8 values), scales[8]: four u16 carrying 3-bit
    /// sub-block scales and, in their top nibbles, the f16 super-scale}.
    static func decodeIQ1M(_ y: UnsafeRawBufferPointer, _ o: UnsafeMutableBufferPointer<Float>) {
        let sc = (0..<4).map { Int(u16(y, 48 + 2 * $0)) }
        let dBits = (sc[0] >> 12) | ((sc[1] >> 8) & 0xF0) | ((sc[2] >> 4) & 0xF00) | (sc[3] & 0xF000)
        let d = unhalf(UInt16(dBits))
        for ib in 0..<8 {
            let s = sc[ib / 2] >> (6 * (ib % 2))
            let dl = (d * Float(2 * (s & 7) + 1), d * Float(2 * ((s >> 3) & 7) + 1))
            for l in 0..<4 {
                let h = Int(y[32 + 2 * ib + l / 2]) >> (4 * (l % 2))
                let g = (Int(y[4 * ib + l]) | ((h & 7) << 8)) * 8
                let delta: Float = h & 8 != 0 ? -0.125 : 0.125
                let scale = l < 2 ? dl.0 : dl.1
                for j in 0..<8 { o[32 * ib + 8 * l + j] = scale * (Float(GGMLGrids.iq1s[g + j]) + delta) }
            }
        }
    }

    /// {d, scales_h (u16: 2 high bits per sub-block), scales_l[4] (4 low bits), qs[128]}.
    static func decodeIQ4XS(_ y: UnsafeRawBufferPointer, _ o: UnsafeMutableBufferPointer<Float>) {
        let d = unhalf(u16(y, 0))
        let high = Int(u16(y, 2))
        for ib in 0..<8 {
            let low = Int(y[4 + ib / 2] >> UInt8(4 * (ib % 2))) & 0xF
            let ls = low | (((high >> (2 * ib)) & 3) << 4)
            let dl = d * Float(ls - 32)
            for j in 0..<16 {
                let q = y[8 + 16 * ib + j]
                o[32 * ib + j] = dl * iq4nlLevels[Int(q & 0xF)]
                o[32 * ib + j + 16] = dl * iq4nlLevels[Int(q >> 4)]
            }
        }
    }

    /// {qs[48] (five base-3 digits per byte), qh[4] (four), d}; byte values are scaled by 256/243.
    static func decodeTQ1(_ y: UnsafeRawBufferPointer, _ o: UnsafeMutableBufferPointer<Float>) {
        let d = unhalf(u16(y, 52))
        let pow3: [UInt8] = [1, 3, 9, 27, 81]
        @inline(__always) func trit(_ byte: UInt8, _ n: Int) -> Float {
            let q = byte &* pow3[n]
            return Float(Int((UInt16(q) * 3) >> 8) - 1)
        }
        for n in 0..<5 { for m in 0..<32 { o[32 * n + m] = d * trit(y[m], n) } }
        for n in 0..<5 { for m in 0..<16 { o[160 + 16 * n + m] = d * trit(y[32 + m], n) } }
        for n in 0..<4 { for m in 0..<4 { o[240 + 4 * n + m] = d * trit(y[48 + m], n) } }
    }
}

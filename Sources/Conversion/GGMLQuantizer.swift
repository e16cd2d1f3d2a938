import TensorIO

/// Quantizers of ggml's block formats, operating on one row (a multiple of the block size): what `convert` and the
/// GGUF attacks write. Reading a GGUF needs only `GGMLBlockCodec`'s dequantizers, in TensorIO.
///
/// Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 follow ggml's reference quantizers operation for operation in `Float`
/// arithmetic, so their bytes are identical with the PyPI `gguf` package's (checked by an interop test).
/// Q4_K and Q6_K follow ggml's `quantize_row_q4_K_reference` (weighted min/scale search per 32-value
/// sub-block, 6-bit packed scales) and `quantize_row_q6_K_reference` (`make_qx_quants` per 16 values).
public enum GGMLQuantizer {
    /// Types this codec can quantize.
    public static let supportedTypes: Set<GGMLType> = [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q6_K]

    /// Quantizes one row.
    /// - Precondition: `type` is in `supportedTypes` and `row.count` is a multiple of its block size.
    public static func quantize(_ row: [Float], as type: GGMLType) -> [UInt8] {
        let (qk, size) = type.blockLayout
        precondition(row.count % qk == 0, "row length \(row.count) is not a multiple of \(type.name)'s block size \(qk)")
        var out = [UInt8](repeating: 0, count: row.count / qk * size)
        row.withUnsafeBufferPointer { x in
            out.withUnsafeMutableBytes { y in
                for b in 0..<(row.count / qk) {
                    let xb = UnsafeBufferPointer(rebasing: x[(b * qk)..<((b + 1) * qk)])
                    let yb = UnsafeMutableRawBufferPointer(rebasing: y[(b * size)..<((b + 1) * size)])
                    switch type {
                    case .q8_0: quantizeQ8_0(xb, yb)
                    case .q4_0: quantizeSymmetric(xb, yb, levels: 16)
                    case .q5_0: quantizeSymmetric(xb, yb, levels: 32)
                    case .q4_1: quantizeAffine(xb, yb, levels: 16)
                    case .q5_1: quantizeAffine(xb, yb, levels: 32)
                    case .q4_K: quantizeQ4_K(xb, yb)
                    case .q6_K: quantizeQ6_K(xb, yb)
                    default: preconditionFailure("\(type.name) quantization is not supported")
                    }
                }
            }
        }
        return out
    }

    static func quantizeQ8_0(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableRawBufferPointer) {
        var amax: Float = 0
        for v in x { amax = max(amax, abs(v)) }
        let d = amax / 127
        let id: Float = d != 0 ? 1 / d : 0
        y.storeBytes(of: GGMLBlockCodec.half(d).littleEndian, toByteOffset: 0, as: UInt16.self)
        for j in 0..<32 {
            let q = (x[j] * id).rounded(.toNearestOrAwayFromZero)
            y[2 + j] = UInt8(bitPattern: Int8(q))
        }
    }

    /// Q4_0 (16 levels) and Q5_0 (32 levels): d = (value of largest magnitude) / −(levels/2).
    static func quantizeSymmetric(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableRawBufferPointer, levels: Int) {
        var amax: Float = 0, vmax: Float = 0
        for v in x where abs(v) > amax { amax = abs(v); vmax = v }
        let d = vmax / -Float(levels / 2)
        let id: Float = d != 0 ? 1 / d : 0
        y.storeBytes(of: GGMLBlockCodec.half(d).littleEndian, toByteOffset: 0, as: UInt16.self)
        var q = [UInt8](repeating: 0, count: 32)
        let offset = Float(levels / 2) + 0.5
        for j in 0..<32 { q[j] = UInt8(min(Float(levels - 1), max(0, (x[j] * id + offset).rounded(.towardZero)))) }
        pack(q, into: y, at: 2, highBits: levels == 32)
    }

    /// Q4_1 (16 levels) and Q5_1 (32 levels): d = (max − min)/(levels − 1), m = min.
    static func quantizeAffine(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableRawBufferPointer, levels: Int) {
        var lo = x[0], hi = x[0]
        for v in x { lo = min(lo, v); hi = max(hi, v) }
        let d = (hi - lo) / Float(levels - 1)
        let id: Float = d != 0 ? 1 / d : 0
        y.storeBytes(of: GGMLBlockCodec.half(d).littleEndian, toByteOffset: 0, as: UInt16.self)
        y.storeBytes(of: GGMLBlockCodec.half(lo).littleEndian, toByteOffset: 2, as: UInt16.self)
        var q = [UInt8](repeating: 0, count: 32)
        for j in 0..<32 { q[j] = UInt8(min(Float(levels - 1), max(0, ((x[j] - lo) * id + 0.5).rounded(.towardZero)))) }
        pack(q, into: y, at: 4, highBits: levels == 32)
    }

    /// Low nibbles: element j in the low half of byte j, element j+16 in the high half. For 5-bit types a
    /// 32-bit little-endian mask of the fifth bits comes first.
    static func pack(_ q: [UInt8], into y: UnsafeMutableRawBufferPointer, at offset: Int, highBits: Bool) {
        var o = offset
        if highBits {
            var qh: UInt32 = 0
            for j in 0..<32 { qh |= UInt32((q[j] >> 4) & 1) << UInt32(j) }
            y.storeBytes(of: qh.littleEndian, toByteOffset: o, as: UInt32.self)
            o += 4
        }
        for j in 0..<16 { y[o + j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4) }
    }

    // MARK: Q4_K

    /// ggml's `make_qkx2_quants`: affine quantization of one sub-block minimizing a weighted squared error
    /// over a small grid of scales. Returns (scale, −min) and fills `levels`.
    static func makeQKX2Quants(_ x: ArraySlice<Float>, weights: [Float], nmax: Int, rmin: Float, rdelta: Float,
                               steps: Int, levels L: inout [UInt8]) -> (scale: Float, negMin: Float) {
        let n = x.count
        let xs = Array(x)
        var lo = xs[0], hi = xs[0]
        var sumW = weights[0], sumX = weights[0] * xs[0]
        for i in 1..<n {
            lo = min(lo, xs[i]); hi = max(hi, xs[i])
            sumW += weights[i]; sumX += weights[i] * xs[i]
        }
        if lo > 0 { lo = 0 }
        if hi == lo {
            for i in 0..<n { L[i] = 0 }
            return (0, -lo)
        }
        var iscale = Float(nmax) / (hi - lo)
        var scale = 1 / iscale
        var best: Float = 0
        for i in 0..<n {
            let l = max(0, min(nmax, GGMLBlockCodec.nearestInt(iscale * (xs[i] - lo))))
            L[i] = UInt8(l)
            let diff = scale * Float(l) + lo - xs[i]
            best += weights[i] * diff * diff
        }
        var aux = [UInt8](repeating: 0, count: n)
        for step in 0...steps {
            iscale = (rmin + rdelta * Float(step) + Float(nmax)) / (hi - lo)
            var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
            for i in 0..<n {
                let l = max(0, min(nmax, GGMLBlockCodec.nearestInt(iscale * (xs[i] - lo))))
                aux[i] = UInt8(l)
                let w = weights[i], fl = Float(l)
                sumL += w * fl; sumL2 += w * fl * fl; sumXL += w * fl * xs[i]
            }
            let det = sumW * sumL2 - sumL * sumL
            guard det > 0 else { continue }
            var thisScale = (sumW * sumXL - sumX * sumL) / det
            var thisMin = (sumL2 * sumX - sumL * sumXL) / det
            if thisMin > 0 { thisMin = 0; thisScale = sumXL / sumL2 }
            var err: Float = 0
            for i in 0..<n {
                let diff = thisScale * Float(aux[i]) + thisMin - xs[i]
                err += weights[i] * diff * diff
            }
            if err < best {
                L = aux; best = err; scale = thisScale; lo = thisMin
            }
        }
        return (scale, -lo)
    }



    static func quantizeQ4_K(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableRawBufferPointer) {
        var L = [UInt8](repeating: 0, count: 256)
        var scales = [Float](repeating: 0, count: 8), mins = [Float](repeating: 0, count: 8)
        var maxScale: Float = 0, maxMin: Float = 0
        let xs = Array(x)
        for j in 0..<8 {
            var sumX2: Float = 0
            for l in 0..<32 { sumX2 += xs[32 * j + l] * xs[32 * j + l] }
            let avX = (sumX2 / 32).squareRoot()
            let weights = (0..<32).map { avX + abs(xs[32 * j + $0]) }
            var sub = [UInt8](repeating: 0, count: 32)
            let (s, m) = makeQKX2Quants(xs[(32 * j)..<(32 * j + 32)], weights: weights, nmax: 15, rmin: -1, rdelta: 0.1,
                                        steps: 20, levels: &sub)
            for l in 0..<32 { L[32 * j + l] = sub[l] }
            scales[j] = s; mins[j] = m
            maxScale = max(maxScale, s); maxMin = max(maxMin, m)
        }
        let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
        let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
        var packed = [UInt8](repeating: 0, count: 12)
        for j in 0..<8 {
            let ls = UInt8(min(63, GGMLBlockCodec.nearestInt(invScale * scales[j])))
            let lm = UInt8(min(63, GGMLBlockCodec.nearestInt(invMin * mins[j])))
            if j < 4 {
                packed[j] = ls; packed[j + 4] = lm
            } else {
                packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
                packed[j - 4] |= (ls >> 4) << 6
                packed[j] |= (lm >> 4) << 6
            }
        }
        let dHalf = GGMLBlockCodec.half(maxScale / 63), mHalf = GGMLBlockCodec.half(maxMin / 63)
        y.storeBytes(of: dHalf.littleEndian, toByteOffset: 0, as: UInt16.self)
        y.storeBytes(of: mHalf.littleEndian, toByteOffset: 2, as: UInt16.self)
        for k in 0..<12 { y[4 + k] = packed[k] }
        packed.withUnsafeBytes { p in
            for j in 0..<8 {
                let (sc, m) = GGMLBlockCodec.scaleMinK4(j, p)
                let d = GGMLBlockCodec.unhalf(dHalf) * Float(sc)
                guard d != 0 else { continue }
                let dm = GGMLBlockCodec.unhalf(mHalf) * Float(m)
                for i in 0..<32 { L[32 * j + i] = UInt8(max(0, min(15, GGMLBlockCodec.nearestInt((xs[32 * j + i] + dm) / d)))) }
            }
        }
        for chunk in 0..<4 {
            for l in 0..<32 { y[16 + 32 * chunk + l] = L[64 * chunk + l] | (L[64 * chunk + l + 32] << 4) }
        }
    }

    // MARK: Q6_K

    /// ggml's `make_qx_quants` with `rmse_type` 1 (weights x²): symmetric quantization of one sub-block to
    /// levels −nmax…nmax−1, searching 18 scales around nmax/max for the best weighted fit. Fills `L` with
    /// level + nmax and returns the scale.
    static func makeQXQuants(_ x: ArraySlice<Float>, nmax: Int, levels L: inout [UInt8]) -> Float {
        let xs = Array(x), n = xs.count
        var vmax: Float = 0, amax: Float = 0
        for v in xs where abs(v) > amax { amax = abs(v); vmax = v }
        if amax < 1e-30 { for i in 0..<n { L[i] = 0 }; return 0 }
        var iscale = -Float(nmax) / vmax
        var sumlx: Float = 0, suml2: Float = 0
        for i in 0..<n {
            let l = max(-nmax, min(nmax - 1, GGMLBlockCodec.nearestInt(iscale * xs[i])))
            L[i] = UInt8(l + nmax)
            let w = xs[i] * xs[i], fl = Float(l)
            sumlx += w * xs[i] * fl; suml2 += w * fl * fl
        }
        var scale = sumlx / suml2
        var best = scale * sumlx
        for step in -9...9 where step != 0 {
            iscale = -(Float(nmax) + 0.1 * Float(step)) / vmax
            sumlx = 0; suml2 = 0
            for i in 0..<n {
                let l = Float(max(-nmax, min(nmax - 1, GGMLBlockCodec.nearestInt(iscale * xs[i]))))
                let w = xs[i] * xs[i]
                sumlx += w * xs[i] * l; suml2 += w * l * l
            }
            if suml2 > 0 && sumlx * sumlx > best * suml2 {
                for i in 0..<n { L[i] = UInt8(nmax + max(-nmax, min(nmax - 1, GGMLBlockCodec.nearestInt(iscale * xs[i])))) }
                scale = sumlx / suml2; best = scale * sumlx
            }
        }
        return scale
    }

    /// ggml's `quantize_row_q6_K_reference`: 16 sub-blocks of 16 with int8 scales under one f16 super-scale;
    /// layout {ql[128], qh[64], scales[16], d}.
    static func quantizeQ6_K(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeMutableRawBufferPointer) {
        let xs = Array(x)
        var L = [UInt8](repeating: 0, count: 256)
        var scales = [Float](repeating: 0, count: 16)
        var maxScale: Float = 0, maxAbsScale: Float = 0
        for ib in 0..<16 {
            var sub = [UInt8](repeating: 0, count: 16)
            let s = makeQXQuants(xs[(16 * ib)..<(16 * ib + 16)], nmax: 32, levels: &sub)
            for l in 0..<16 { L[16 * ib + l] = sub[l] }
            scales[ib] = s
            if abs(s) > maxAbsScale { maxAbsScale = abs(s); maxScale = s }
        }
        for k in 0..<210 { y[k] = 0 }
        guard maxAbsScale != 0 else { return }
        let iscale = -128 / maxScale
        let dHalf = GGMLBlockCodec.half(1 / iscale)
        y.storeBytes(of: dHalf.littleEndian, toByteOffset: 208, as: UInt16.self)
        var sc = [Int8](repeating: 0, count: 16)
        for ib in 0..<16 { sc[ib] = Int8(min(127, GGMLBlockCodec.nearestInt(iscale * scales[ib]))); y[192 + ib] = UInt8(bitPattern: sc[ib]) }
        for j in 0..<16 {
            let d = GGMLBlockCodec.unhalf(dHalf) * Float(sc[j])
            guard d != 0 else { continue }
            for i in 0..<16 { L[16 * j + i] = UInt8(max(-32, min(31, GGMLBlockCodec.nearestInt(xs[16 * j + i] / d))) + 32) }
        }
        for half in 0..<2 {
            let j = 128 * half, ql = 64 * half, qh = 128 + 32 * half
            for l in 0..<32 {
                let q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF
                y[ql + l] = q1 | (q3 << 4)
                y[ql + l + 32] = q2 | (q4 << 4)
                y[qh + l] = (L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6)
            }
        }
    }
}

import CTensorIOKernels
/// Conversions between stored floating-point encodings and `Float`.
///
/// bf16 → f32 is a shift; f32 → bf16 rounds to nearest even and keeps NaNs quiet (byte-identical with
/// `ml_dtypes`). f16 decoding goes through a 65,536-entry table built once from `Float16`, which is exact
/// by construction and much faster than the library call the default target CPU makes.
public enum FloatConversion {
    /// f16 bit pattern → Float, for all 65,536 patterns.
    public static let halfTable: [Float] = (0..<65536).map { Float(Float16(bitPattern: UInt16($0))) }

    @inlinable @inline(__always)
    public static func bf16ToFloat(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    @inlinable @inline(__always)
    public static func floatToBF16(_ x: Float) -> UInt16 {
        let b = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: b >> 16) | 0x0040 }
        return UInt16(truncatingIfNeeded: (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
    }

    @inlinable @inline(__always)
    public static func floatToF16(_ x: Float) -> UInt16 { Float16(x).bitPattern }

    /// Decodes `count` elements of `dtype` from raw (possibly unaligned) bytes into `out`.
    /// - Precondition: `dtype.isSupportedFloat`, `bytes.count == count * dtype.bitCount / 8`.
    public static func decode(_ bytes: UnsafeRawBufferPointer, dtype: DType, into out: UnsafeMutableBufferPointer<Float>) {
        let n = out.count
        precondition(bytes.count == n * dtype.bitCount / 8, "byte count does not match element count")
        guard n > 0, let src = bytes.baseAddress, let dst = out.baseAddress else { return }
        switch dtype {
        case .f32:
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: n * 4)
        case .bf16:
            for i in 0..<n {
                dst[i] = bf16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian)
            }
        case .f16:
            halfTable.withUnsafeBufferPointer { table in
                for i in 0..<n {
                    dst[i] = table[Int(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian)]
                }
            }
        case .f64:
            for i in 0..<n {
                dst[i] = Float(Double(bitPattern: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self).littleEndian))
            }
        default:
            preconditionFailure("\(dtype.rawValue) is not a supported float type")
        }
    }

    /// Decodes raw bytes into a new array.
    public static func decode(_ bytes: UnsafeRawBufferPointer, dtype: DType) -> [Float] {
        let n = bytes.count * 8 / dtype.bitCount
        return [Float](unsafeUninitializedCapacity: n) { buf, count in
            decode(bytes, dtype: dtype, into: buf)
            count = n
        }
    }

    /// Encodes floats as `dtype` into `out` (round to nearest even for f16 and bf16).
    /// - Precondition: `out.count == values.count * dtype.bitCount / 8`.
    public static func encode(_ values: UnsafeBufferPointer<Float>, as dtype: DType, into out: UnsafeMutableRawBufferPointer) {
        let n = values.count
        precondition(out.count == n * dtype.bitCount / 8, "byte count does not match element count")
        guard n > 0, let src = values.baseAddress, let dst = out.baseAddress else { return }
        switch dtype {
        case .f32:
            dst.copyMemory(from: src, byteCount: n * 4)
        case .bf16:
            for i in 0..<n { dst.storeBytes(of: floatToBF16(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        case .f16:
            for i in 0..<n { dst.storeBytes(of: floatToF16(src[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
        case .f64:
            for i in 0..<n { dst.storeBytes(of: Double(src[i]).bitPattern.littleEndian, toByteOffset: 8 * i, as: UInt64.self) }
        default:
            preconditionFailure("\(dtype.rawValue) is not a supported float type")
        }
    }

    /// Encodes floats as f16 or bf16 with unbiased stochastic rounding: each value goes to the nearer or
    /// farther of its two neighbours on the grid with probabilities making the expected stored value equal
    /// the input; one 64-bit draw of `random` serves four values. Other dtypes round to nearest.
    ///
    /// Why: a watermark perturbation far below half a bf16 step, added to weights that already sit on the
    /// grid, would be rounded away entirely by round-to-nearest; stochastic rounding keeps it in expectation.
    public static func encodeStochastically<R: RandomNumberGenerator>(_ values: UnsafeBufferPointer<Float>, as dtype: DType,
                                                                      into out: UnsafeMutableRawBufferPointer, using random: inout R) {
        guard dtype == .bf16 || dtype == .f16 else {
            encode(values, as: dtype, into: out)
            return
        }
        precondition(out.count == values.count * 2, "byte count does not match element count")
        var bits: UInt64 = 0
        var left = 0
        for i in 0..<values.count {
            if left == 0 { bits = random.next(); left = 4 }
            let r = UInt32(truncatingIfNeeded: bits & 0xFFFF)
            bits >>= 16; left -= 1
            let x = values[i]
            var h: UInt16
            if dtype == .bf16 {
                let b = x.bitPattern
                // Truncation toward zero, then one step away from zero with probability = dropped fraction.
                h = UInt16(truncatingIfNeeded: b >> 16) &+ ((b & 0xFFFF) > r ? 1 : 0)
                // NaN/inf in, or a step that overflowed to inf: round to nearest instead.
                if (b & 0x7F80_0000) == 0x7F80_0000 || (h & 0x7F80) == 0x7F80 { h = floatToBF16(x) }
            } else {
                let n = Float16(x)
                if !x.isFinite || !n.isFinite || Float(n) == x {
                    h = n.bitPattern
                } else {
                    let other = Float(n) > x ? n.nextDown : n.nextUp
                    let (lo, hi) = Float(n) < Float(other) ? (n, other) : (other, n)
                    let p = (x - Float(lo)) / (Float(hi) - Float(lo))
                    h = (Float(r) + 0.5) / 65536 < p ? hi.bitPattern : lo.bitPattern
                }
            }
            out.storeBytes(of: h.littleEndian, toByteOffset: 2 * i, as: UInt16.self)
        }
    }

    /// bf16 stochastic rounding drawing from a SplitMix64 generator with state `state` (advanced as its
    /// `next()` would be): byte-identical to `encodeStochastically(_:as:into:using:)` with that generator, on
    /// the vector units (CKernels).
    public static func encodeBF16Stochastically(_ values: UnsafeBufferPointer<Float>, into out: UnsafeMutableRawBufferPointer,
                                                splitMixState state: inout UInt64) {
        precondition(out.count == values.count * 2, "byte count does not match element count")
        guard let x = values.baseAddress, let o = out.baseAddress else { return }
        weightmark_bf16_stochastic(vectorLevel, x, values.count, o.assumingMemoryBound(to: UInt16.self), &state)
    }

    /// The CPU's vector code path for CKernels, chosen once.
    static let vectorLevel = weightmark_vector_level()

    /// Array convenience for `encodeStochastically(_:as:into:using:)`.
    public static func encodeStochastically<R: RandomNumberGenerator>(_ values: [Float], as dtype: DType, using random: inout R) -> [UInt8] {
        let count = values.count * dtype.bitCount / 8
        return [UInt8](unsafeUninitializedCapacity: count) { buf, n in
            values.withUnsafeBufferPointer { encodeStochastically($0, as: dtype, into: UnsafeMutableRawBufferPointer(buf), using: &random) }
            n = count
        }
    }

    /// Encodes floats as `dtype` into a new byte array.
    public static func encode(_ values: [Float], as dtype: DType) -> [UInt8] {
        let count = values.count * dtype.bitCount / 8
        return [UInt8](unsafeUninitializedCapacity: count) { buf, initialized in
            values.withUnsafeBufferPointer { encode($0, as: dtype, into: UnsafeMutableRawBufferPointer(buf)) }
            initialized = count
        }
    }
}

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

    /// Encodes floats as `dtype` into a new byte array.
    public static func encode(_ values: [Float], as dtype: DType) -> [UInt8] {
        let count = values.count * dtype.bitCount / 8
        return [UInt8](unsafeUninitializedCapacity: count) { buf, initialized in
            values.withUnsafeBufferPointer { encode($0, as: dtype, into: UnsafeMutableRawBufferPointer(buf)) }
            initialized = count
        }
    }
}

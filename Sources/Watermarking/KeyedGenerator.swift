import CKernels
import CTensorIOKernels
import Crypto
import Foundation

/// Deterministic keyed randomness for the watermark: HKDF-SHA256 derives a per-purpose subkey, which
/// keys a ChaCha20 stream, from which uniforms, Gaussians and signs are drawn.
///
/// Every transform here is part of the detection format: changing any of them makes marks already
/// released undetectable, so each is pinned by golden vectors (Tests/WatermarkingTests/Golden).
public struct KeyedGenerator: Sendable {
    private var stream: ChaCha20
    private var spareGaussian: Double?

    /// HKDF salt for format version 1.
    public static let salt = Array("weightmark/v1/hkdf-salt".utf8)

    /// The HKDF `info` string of format v1 for one purpose and tensor: versioned, and bound to the tensor's name
    /// and shape so two tensors never share randomness. (Format v2 derives nothing from names: `TileCarriers`.)
    public static func info(purpose: String, tensor: String, shape: [Int]) -> [UInt8] {
        Array("weightmark/v1|\(purpose)|\(tensor)|\(shape.map(String.init).joined(separator: "x"))".utf8)
    }

    /// The 32-byte subkey `HKDF-SHA256(secret, salt, info)`.
    public static func subkey(secret: [UInt8], info: [UInt8]) -> [UInt8] {
        let key = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: secret), salt: salt, info: info,
                                         outputByteCount: 32)
        return key.withUnsafeBytes { Array($0) }
    }

    public init(secret: [UInt8], purpose: String, tensor: String, shape: [Int]) {
        stream = ChaCha20(key: KeyedGenerator.subkey(secret: secret, info: KeyedGenerator.info(purpose: purpose, tensor: tensor, shape: shape)))
    }

    public init(subkey: [UInt8]) { stream = ChaCha20(key: subkey) }

    /// A uniform double in the open interval (0, 1): the top 53 bits of a 64-bit draw, offset by half a step.
    public mutating func nextUniform() -> Double {
        (Double(stream.nextUInt64() >> 11) + 0.5) * 0x1p-53
    }

    /// A standard normal draw by the Box–Muller transform, both outputs used in order
    /// (`r·cos θ`, then `r·sin θ`) with `r = sqrt(−2 ln u1)`, `θ = 2π u2`.
    public mutating func nextGaussian() -> Double {
        if let g = spareGaussian { spareGaussian = nil; return g }
        let u1 = nextUniform(), u2 = nextUniform()
        let r = (-2 * Foundation.log(u1)).squareRoot()
        let theta = 2 * Double.pi * u2
        spareGaussian = r * Foundation.sin(theta)
        return r * Foundation.cos(theta)
    }

    /// The first `count` draws of `nextGaussian()` from a fresh generator keyed by `subkey`, as floats:
    /// the same values (see `CKernels`' `weightmark_keyed_gaussians`), 128 at a time on the vector units.
    public static func gaussians(subkey: [UInt8], count: Int) -> [Float] {
        let key = keyWords(subkey)
        return [Float](unsafeUninitializedCapacity: count) { buf, n in
            weightmark_keyed_gaussians(key, count, buf.baseAddress, nil)
            n = count
        }
    }

    /// The vector code paths of `gaussians(subkey:count:)` this CPU runs: 0 portable, 1 AVX2, 2 AVX-512.
    public static var gaussianCodePaths: ClosedRange<Int> { 0...Int(weightmark_vector_level()) }

    /// `gaussians(subkey:count:)` in double precision on a given code path, to check it against `nextGaussian()`.
    public static func gaussianDoubles(subkey: [UInt8], count: Int, codePath: Int) -> [Double] {
        precondition(gaussianCodePaths.contains(codePath), "this CPU cannot run code path \(codePath)")
        let key = keyWords(subkey)
        return [Double](unsafeUninitializedCapacity: count) { buf, n in
            weightmark_keyed_gaussians_at_level(Int32(codePath), key, count, nil, buf.baseAddress)
            n = count
        }
    }

    private static func keyWords(_ subkey: [UInt8]) -> [UInt32] {
        precondition(subkey.count == 32, "a subkey has 32 bytes")
        return (0..<8).map { i in (0..<4).reduce(UInt32(0)) { $0 | UInt32(subkey[4 * i + $1]) << (8 * UInt32($1)) } }
    }

    /// ±1 with equal probability: the low bit of a 32-bit draw (1 → +1).
    public mutating func nextSign() -> Float {
        (stream.nextWord() & 1) == 1 ? 1 : -1
    }
}

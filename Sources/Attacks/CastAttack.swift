import TensorIO

/// Casts to a narrower float type: fp16 and bf16 (stored as such, round to nearest even), or fp8 E4M3
/// with a per-tensor scale (max |w| ↦ 448), simulated and stored in the original dtype.
public struct CastAttack: WeightAttack {
    public enum Target: String, Sendable { case fp16, bf16, fp8 }
    public let target: Target
    public init(target: Target) { self.target = target }

    public var spec: String { target.rawValue }

    public func outputDType(for dtype: DType) -> DType {
        switch target {
        case .fp16: .f16
        case .bf16: .bf16
        case .fp8: dtype
        }
    }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        switch target {
        case .fp16:
            for i in values.indices { values[i] = Float(Float16(values[i])) }
        case .bf16:
            for i in values.indices { values[i] = FloatConversion.bf16ToFloat(FloatConversion.floatToBF16(values[i])) }
        case .fp8:
            let maxAbs = values.reduce(Float(0)) { max($0, abs($1)) }
            guard maxAbs > 0 else { return }
            let scale = maxAbs / 448
            for i in values.indices { values[i] = Self.roundE4M3(values[i] / scale) * scale }
        }
    }

    /// Nearest value of float8 E4M3FN (bias 7, no infinities, max 448, subnormals down to 2⁻⁹), ties to even.
    static func roundE4M3(_ x: Float) -> Float {
        let a = abs(x)
        if a >= 448 { return x < 0 ? -448 : 448 }
        if a == 0 { return x }
        // Exponent of the binade, clamped to the normal range (min normal 2⁻⁶); 3 mantissa bits.
        let e = max(Float(-6), (a.exponent >= -6 ? Float(a.exponent) : -6))
        let step = Float(sign: .plus, exponent: Int(e) - 3, significand: 1)
        let q = (a / step).rounded(.toNearestOrEven) * step
        return x < 0 ? -min(q, 448) : min(q, 448)
    }
}

/// Round-to-nearest integer quantization, simulated (quantize then dequantize).
public struct IntegerQuantization: WeightAttack {
    public enum Scheme: Sendable, Equatable {
        /// Symmetric, one scale per output channel (row): q = round(w / s), s = max|w_row| / (2^(k−1) − 1).
        case perChannelSymmetric
        /// Asymmetric, groups of `size` consecutive weights along a row: 2^k levels between min and max.
        case groupAsymmetric(size: Int)
    }
    public let bits: Int
    public let scheme: Scheme
    public init(bits: Int, scheme: Scheme) { self.bits = bits; self.scheme = scheme }

    public var spec: String {
        switch scheme {
        case .perChannelSymmetric: "int\(bits)"
        case let .groupAsymmetric(size): "int\(bits):group=\(size)"
        }
    }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        let (m, n) = (shape[0], shape[1])
        switch scheme {
        case .perChannelSymmetric:
            let qmax = Float((1 << (bits - 1)) - 1)
            for i in 0..<m {
                var maxAbs: Float = 0
                for j in 0..<n { maxAbs = max(maxAbs, abs(values[i * n + j])) }
                guard maxAbs > 0 else { continue }
                let s = maxAbs / qmax
                for j in 0..<n {
                    let q = min(qmax, max(-qmax, (values[i * n + j] / s).rounded(.toNearestOrEven)))
                    values[i * n + j] = q * s
                }
            }
        case let .groupAsymmetric(size):
            let levels = Float((1 << bits) - 1)
            for i in 0..<m {
                var start = 0
                while start < n {
                    let end = min(n, start + size)
                    var lo = Float.infinity, hi = -Float.infinity
                    for j in start..<end { lo = min(lo, values[i * n + j]); hi = max(hi, values[i * n + j]) }
                    let s = (hi - lo) / levels
                    if s > 0 {
                        let zero = (-lo / s).rounded(.toNearestOrEven)
                        for j in start..<end {
                            let q = min(levels, max(0, (values[i * n + j] / s).rounded(.toNearestOrEven) + zero))
                            values[i * n + j] = (q - zero) * s
                        }
                    }
                    start = end
                }
            }
        }
    }
}

/// 4-bit NormalFloat (QLoRA, Dettmers et al. 2023): absmax-scaled blocks of 64 mapped to the nearest of
/// 16 levels placed at normal quantiles. The codebook is bitsandbytes' published NF4 table.
public struct NF4Quantization: WeightAttack {
    public let blockSize: Int
    public init(blockSize: Int = 64) { self.blockSize = blockSize }
    public var spec: String { "nf4:block=\(blockSize)" }

    public static let codebook: [Float] = [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ]

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        var start = 0
        while start < values.count {
            let end = min(values.count, start + blockSize)
            var absmax: Float = 0
            for j in start..<end { absmax = max(absmax, abs(values[j])) }
            if absmax > 0 {
                for j in start..<end { values[j] = Self.nearest(values[j] / absmax) * absmax }
            }
            start = end
        }
    }

    static func nearest(_ x: Float) -> Float {
        var best = codebook[0], bestDistance = abs(x - best)
        for c in codebook.dropFirst() where abs(x - c) < bestDistance { best = c; bestDistance = abs(x - c) }
        return best
    }
}

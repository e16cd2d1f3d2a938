import LinearAlgebra
import TensorIO

/// Sets weights to exactly zero.
public struct Pruning: WeightAttack {
    public enum Mode: String, Sendable, CaseIterable {
        /// Smallest |w| per tensor.
        case magnitude
        /// Smallest |w| over all attacked tensors at once (one global threshold).
        case global
        /// Uniformly random positions (seeded).
        case random
        /// Whole rows (output units) of smallest L2 norm.
        case rows
        /// Whole columns (input features) of smallest L2 norm.
        case columns
    }
    public let fraction: Double
    public let mode: Mode
    public let seed: UInt64
    private var globalThreshold: Float?

    public init(fraction: Double, mode: Mode = .magnitude, seed: UInt64 = 1) {
        self.fraction = fraction; self.mode = mode; self.seed = seed
    }

    public var spec: String { "prune:fraction=\(compact(fraction)),mode=\(mode.rawValue)" + (mode == .random ? ",seed=\(seed)" : "") }

    public mutating func prepare(model: SafetensorsModel, context: AttackContext) throws {
        guard mode == .global else { return }
        // Global magnitude threshold: the fraction-quantile of |w| over every attacked tensor.
        var all: [Float] = []
        for t in model.tensors where applies(to: t.name, shape: t.shape, dtype: t.dtype) {
            all += try model.floats(of: t).map(abs)
        }
        globalThreshold = Self.quantile(&all, fraction)
    }

    /// The value below which `fraction` of `values` lie (values is reordered).
    static func quantile(_ values: inout [Float], _ fraction: Double) -> Float {
        guard !values.isEmpty else { return 0 }
        values.sort()
        let k = min(values.count - 1, Int((fraction * Double(values.count)).rounded(.down)))
        return values[k]
    }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        let count = values.count
        let target = Int((fraction * Double(count)).rounded())
        guard target > 0 else { return }
        let (m, n) = (shape[0], shape[1])
        switch mode {
        case .magnitude:
            // Exactly `target` zeros: sort indices by |w| (ties broken by index).
            let order = values.indices.sorted { (abs(values[$0]), $0) < (abs(values[$1]), $1) }
            for i in order.prefix(target) { values[i] = 0 }
        case .global:
            let threshold = globalThreshold ?? 0
            for i in values.indices where abs(values[i]) < threshold { values[i] = 0 }
        case .random:
            var rng = SplitMix64(seed: tensorSeed(seed, name))
            var idx = Array(values.indices)
            idx.shuffle(using: &rng)
            for i in idx.prefix(target) { values[i] = 0 }
        case .rows:
            let k = Int((fraction * Double(m)).rounded())
            let norms = (0..<m).map { i in (0..<n).reduce(Float(0)) { $0 + values[i * n + $1] * values[i * n + $1] } }
            for i in (0..<m).sorted(by: { (norms[$0], $0) < (norms[$1], $1) }).prefix(k) {
                for j in 0..<n { values[i * n + j] = 0 }
            }
        case .columns:
            let k = Int((fraction * Double(n)).rounded())
            var norms = [Float](repeating: 0, count: n)
            for i in 0..<m { for j in 0..<n { norms[j] += values[i * n + j] * values[i * n + j] } }
            for j in (0..<n).sorted(by: { (norms[$0], $0) < (norms[$1], $1) }).prefix(k) {
                for i in 0..<m { values[i * n + j] = 0 }
            }
        }
    }
}

/// N:M structured sparsity (e.g. 2:4, as sparse tensor cores use): in every group of M consecutive weights
/// along a row, only the N of largest magnitude are kept.
public struct NMSparsity: WeightAttack {
    public let keep: Int
    public let group: Int
    public init(keep: Int = 2, group: Int = 4) { self.keep = keep; self.group = group }
    public var spec: String { "nm:n=\(keep),m=\(group)" }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        let (m, n) = (shape[0], shape[1])
        for i in 0..<m {
            var start = 0
            while start < n {
                let end = min(n, start + group)
                let idx = (start..<end).sorted { (abs(values[i * n + $0]), -$0) > (abs(values[i * n + $1]), -$1) }
                for j in idx.dropFirst(keep) { values[i * n + j] = 0 }
                start = end
            }
        }
    }
}

import LinearAlgebra
import TensorIO

/// Embeds another owner's mark at `scale` × the default strength on top (needs `context.remark`).
public struct OverwriteAttack: WeightAttack {
    public let scale: Double
    public let copy: Int
    public init(scale: Double, copy: Int = 1) { self.scale = scale; self.copy = copy }
    public var spec: String { "overwrite:strength=\(compact(scale))" }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        guard let remark = context.remark else {
            throw AttackError.missingContext(attack: "overwrite", reason: "needs a re-marking function (the CLI and bench supply one)")
        }
        try remark(copy, name, shape[0], shape[1], &values, scale)
    }
}

/// Linear interpolation `(1 − α) W + α V` with an independent model V of the same shapes. Without a partner
/// model, V is synthetic: Gaussian with W's per-row mean and standard deviation (so merging damages what a
/// real merge would, but V shares nothing with W).
public struct MergeAttack: WeightAttack {
    public let alpha: Double
    public let seed: UInt64
    public init(alpha: Double, seed: UInt64 = 1) { self.alpha = alpha; self.seed = seed }
    public var spec: String { "merge:alpha=\(compact(alpha)),seed=\(seed)" }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        let (m, n) = (shape[0], shape[1])
        var partner: [Float]
        if let other = context.mergePartner, let t = other.tensor(named: name), t.shape == shape, t.dtype.isSupportedFloat {
            partner = try other.floats(of: t)
        } else {
            var rng = SplitMix64(seed: tensorSeed(seed, name))
            partner = [Float](repeating: 0, count: m * n)
            for i in 0..<m {
                var mean = 0.0, sq = 0.0
                for j in 0..<n { mean += Double(values[i * n + j]); sq += Double(values[i * n + j]) * Double(values[i * n + j]) }
                mean /= Double(n)
                let sd = Float(max(0, sq / Double(n) - mean * mean).squareRoot())
                for j in 0..<n { partner[i * n + j] = Float(mean) + sd * rng.nextGaussian() }
            }
        }
        let a = Float(alpha)
        for i in values.indices { values[i] = (1 - a) * values[i] + a * partner[i] }
    }
}

/// Collusion: the average of `copies` differently marked copies, one of them the input. The other copies
/// are the original re-marked with foreign keys (needs `context.original` and `context.remark`).
public struct CollusionAttack: WeightAttack {
    public let copies: Int
    public init(copies: Int) { self.copies = copies }
    public var spec: String { "collusion:copies=\(copies)" }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        guard let original = context.original, let remark = context.remark else {
            throw AttackError.missingContext(attack: "collusion", reason: "needs the unmarked original (--reference) to build the other copies")
        }
        guard let t = original.tensor(named: name), t.shape == shape else { return }
        let base = try original.floats(of: t)
        var sum = values
        for c in 1..<copies {
            var other = base
            try remark(100 + c, name, shape[0], shape[1], &other, 1)
            for i in sum.indices { sum[i] += other[i] }
        }
        let k = Float(copies)
        for i in values.indices { values[i] = sum[i] / k }
    }
}

/// Function-preserving permutation of FFN hidden units: the rows of the up (and gate) projection and its
/// bias, and the columns of the down projection, permuted together per layer. The network computes exactly
/// the same function; blind detection of this tensor's mark is expected to fail.
///
/// Recognized layouts: BERT (`encoder.layer.N.intermediate.dense.{weight,bias}` +
/// `encoder.layer.N.output.dense.weight`) and Llama (`model.layers.N.mlp.{gate,up}_proj.weight` +
/// `model.layers.N.mlp.down_proj.weight`).
public struct FFNPermutation: WeightAttack {
    public let seed: UInt64
    public init(seed: UInt64 = 1) { self.seed = seed }
    public var spec: String { "permute:seed=\(seed)" }

    enum Role { case rows, columns }

    /// (layer key, role) for a tensor name, nil if not part of an FFN.
    static func role(of name: String) -> (layer: String, role: Role)? {
        let patterns: [(prefix: String, suffixes: [(String, Role)])] = [
            ("encoder.layer.", [(".intermediate.dense.weight", .rows), (".intermediate.dense.bias", .rows), (".output.dense.weight", .columns)]),
            ("model.layers.", [(".mlp.gate_proj.weight", .rows), (".mlp.up_proj.weight", .rows), (".mlp.up_proj.bias", .rows),
                               (".mlp.gate_proj.bias", .rows), (".mlp.down_proj.weight", .columns)]),
        ]
        for (prefix, suffixes) in patterns where name.hasPrefix(prefix) {
            for (suffix, role) in suffixes where name.hasSuffix(suffix) {
                let layer = name.dropFirst(prefix.count).dropLast(suffix.count)
                if !layer.isEmpty, layer.allSatisfy(\.isNumber) { return (prefix + layer, role) }
            }
        }
        return nil
    }

    public func applies(to name: String, shape: [Int], dtype: DType) -> Bool {
        dtype.isSupportedFloat && Self.role(of: name) != nil && (shape.count == 2 || shape.count == 1)
    }

    /// The permutation of `size` hidden units of one layer.
    func permutation(layer: String, size: Int) -> [Int] {
        var rng = SplitMix64(seed: tensorSeed(seed, layer))
        var p = Array(0..<size)
        p.shuffle(using: &rng)
        return p
    }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        guard let (layer, role) = Self.role(of: name) else { return }
        let old = values
        if shape.count == 1 {
            let p = permutation(layer: layer, size: shape[0])
            for i in 0..<shape[0] { values[i] = old[p[i]] }
            return
        }
        let (m, n) = (shape[0], shape[1])
        switch role {
        case .rows:
            let p = permutation(layer: layer, size: m)
            for i in 0..<m { for j in 0..<n { values[i * n + j] = old[p[i] * n + j] } }
        case .columns:
            let p = permutation(layer: layer, size: n)
            for i in 0..<m { for j in 0..<n { values[i * n + j] = old[i * n + p[j]] } }
        }
    }
}

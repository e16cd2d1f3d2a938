import Foundation
import LinearAlgebra
import TensorIO

/// Function-preserving permutation of attention heads: per layer, the row blocks of q/k/v (and their biases) and
/// the column blocks of the output projection move together. Under grouped-query attention (`kvHeads` < `heads`)
/// key/value heads are permuted with their group of query heads, and query heads also within their group.
///
/// Recognized layouts: BERT (`encoder.layer.N.attention.self.{query,key,value}`, `attention.output.dense`) and Llama
/// (`model.layers.N.self_attn.{q,k,v,o}_proj`).
public struct HeadPermutation: WeightAttack {
    public let heads: Int
    public let kvHeads: Int
    public let seed: UInt64
    public init(heads: Int, kvHeads: Int? = nil, seed: UInt64 = 1) { self.heads = heads; self.kvHeads = kvHeads ?? heads; self.seed = seed }
    public var spec: String { "permute-heads:heads=\(heads),kv=\(kvHeads),seed=\(seed)" }

    enum Role { case query, keyValue, output }

    static func role(of name: String) -> (layer: String, role: Role)? {
        let patterns: [(prefix: String, suffixes: [(String, Role)])] = [
            ("encoder.layer.", [(".attention.self.query.weight", .query), (".attention.self.query.bias", .query),
                                (".attention.self.key.weight", .keyValue), (".attention.self.key.bias", .keyValue),
                                (".attention.self.value.weight", .keyValue), (".attention.self.value.bias", .keyValue),
                                (".attention.output.dense.weight", .output)]),
            ("model.layers.", [(".self_attn.q_proj.weight", .query), (".self_attn.k_proj.weight", .keyValue),
                               (".self_attn.v_proj.weight", .keyValue), (".self_attn.o_proj.weight", .output)]),
        ]
        for (prefix, suffixes) in patterns {
            guard let at = name.range(of: prefix) else { continue }
            for (suffix, role) in suffixes where name.hasSuffix(suffix) {
                let layer = name[at.upperBound...].dropLast(suffix.count)
                if !layer.isEmpty, layer.allSatisfy(\.isNumber) { return (String(name[..<at.upperBound]) + layer, role) }
            }
        }
        return nil
    }

    public func applies(to name: String, shape: [Int], dtype: DType) -> Bool {
        dtype.isSupportedFloat && Self.role(of: name) != nil && (shape.count == 2 || shape.count == 1)
    }

    /// Reference head → stored head: key/value groups shuffled, then query heads within each group.
    func permutations(layer: String) -> (query: [Int], keyValue: [Int]) {
        var rng = SplitMix64(seed: tensorSeed(seed, layer + "/heads"))
        var kv = Array(0..<kvHeads)
        kv.shuffle(using: &rng)
        let group = heads / kvHeads
        var q: [Int] = []
        for g in 0..<kvHeads {
            var inGroup = Array(0..<group)
            inGroup.shuffle(using: &rng)
            q += inGroup.map { kv[g] * group + $0 }
        }
        return (q, kv)
    }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        guard let (layer, role) = Self.role(of: name) else { return }
        let (q, kv) = permutations(layer: layer)
        let order = role == .keyValue ? kv : q
        let old = values
        if role == .output {
            guard shape.count == 2, shape[1] % heads == 0 else {
                throw AttackError.invalidParameter(attack: "permute-heads", parameter: "heads", reason: "\(heads) does not divide \(name)'s \(shape[1]) columns")
            }
            let (m, n) = (shape[0], shape[1]), hd = n / heads
            for i in 0..<m { for (dst, src) in order.enumerated() { for e in 0..<hd { values[i * n + dst * hd + e] = old[i * n + src * hd + e] } } }
            return
        }
        let rows = shape[0], width = shape.count == 2 ? shape[1] : 1
        guard rows % order.count == 0 else {
            throw AttackError.invalidParameter(attack: "permute-heads", parameter: role == .keyValue ? "kv" : "heads",
                                               reason: "\(order.count) does not divide \(name)'s \(rows) rows")
        }
        let block = rows / order.count * width
        for (dst, src) in order.enumerated() {
            values.replaceSubrange((dst * block)..<((dst + 1) * block), with: old[(src * block)..<((src + 1) * block)])
        }
    }
}

/// Function-preserving per-unit rescaling of a SwiGLU FFN (Llama layout): unit k's up-projection row times c_k and
/// its down-projection column times 1/c_k, with |c_k| log-uniform in [1/spread, spread] and a random sign
/// (`down(silu(gate x) ⊙ (c ⊙ up x)) / c` is unchanged).
public struct FFNScaling: WeightAttack {
    public let spread: Double
    public let seed: UInt64
    public init(spread: Double = 4, seed: UInt64 = 1) { self.spread = spread; self.seed = seed }
    public var spec: String { "scale-ffn:spread=\(compact(spread)),seed=\(seed)" }

    public func applies(to name: String, shape: [Int], dtype: DType) -> Bool {
        guard dtype.isSupportedFloat, let r = FFNPermutation.role(of: name) else { return false }
        return r.layer.hasPrefix("model.layers.") && (name.hasSuffix(".mlp.up_proj.weight") || name.hasSuffix(".mlp.down_proj.weight"))
    }

    func scales(layer: String, count: Int) -> [Float] {
        var rng = SplitMix64(seed: tensorSeed(seed, layer + "/scale"))
        let l = Foundation.log(spread)
        return (0..<count).map { _ in
            let u = Double(rng.next() >> 11) / Double(1 << 53)
            let sign: Float = rng.next() & 1 == 0 ? 1 : -1
            return sign * Float(Foundation.exp((2 * u - 1) * l))
        }
    }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        guard let (layer, _) = FFNPermutation.role(of: name), shape.count == 2 else { return }
        let (m, n) = (shape[0], shape[1])
        if name.hasSuffix("up_proj.weight") {
            let c = scales(layer: layer, count: m)
            for i in 0..<m { for j in 0..<n { values[i * n + j] *= c[i] } }
        } else {
            let c = scales(layer: layer, count: n)
            for i in 0..<m { for j in 0..<n { values[i * n + j] /= c[j] } }
        }
    }
}

/// Function-preserving rotation of the residual stream of an RMSNorm model (Llama layout), as QuaRot and SliceGPT do:
/// every norm weight g is first fused into the matrices reading the normalized stream (W diag(g), g ← 1), then with a
/// random orthogonal Q (d×d): the embedding E Q, matrices reading the stream (q/k/v, gate/up, lm_head) W Q, matrices
/// writing it (o, down) Qᵀ W. RMSNorm with unit weights commutes with Q, so the model computes the same function.
public struct ResidualRotation: WeightAttack {
    public let seed: UInt64
    /// Q and the norm weights, from `prepare`.
    var q: Matrix?
    var norms: [String: [Float]] = [:]
    public init(seed: UInt64 = 1) { self.seed = seed }
    public var spec: String { "rotate:seed=\(seed)" }

    enum Role { case embedding, reading(norm: String), writing, norm }

    static func role(of name: String) -> Role? {
        guard let at = name.range(of: "layers.") else {
            if name.hasSuffix("embed_tokens.weight") { return .embedding }
            if name == "lm_head.weight" { return .reading(norm: "model.norm.weight") }
            if name.hasSuffix("model.norm.weight") { return .norm }
            return nil
        }
        let prefix = String(name[..<at.upperBound])
        let rest = name[at.upperBound...]
        guard let dot = rest.firstIndex(of: ".") else { return nil }
        let layer = prefix + rest[..<dot] + "."
        let suffix = rest[rest.index(after: dot)...]
        switch suffix {
        case "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight":
            return .reading(norm: layer + "input_layernorm.weight")
        case "mlp.gate_proj.weight", "mlp.up_proj.weight": return .reading(norm: layer + "post_attention_layernorm.weight")
        case "self_attn.o_proj.weight", "mlp.down_proj.weight": return .writing
        case "input_layernorm.weight", "post_attention_layernorm.weight": return .norm
        default: return nil
        }
    }

    public func applies(to name: String, shape: [Int], dtype: DType) -> Bool {
        dtype.isSupportedFloat && Self.role(of: name) != nil && (shape.count == 2 || shape.count == 1)
    }

    public mutating func prepare(model: SafetensorsModel, context: AttackContext) throws {
        guard let e = model.tensors.first(where: { $0.name.hasSuffix("embed_tokens.weight") }), e.shape.count == 2 else {
            throw AttackError.missingContext(attack: "rotate", reason: "needs a Llama-layout model (model.embed_tokens.weight not found)")
        }
        let d = e.shape[1]
        var rng = SplitMix64(seed: tensorSeed(seed, "rotation"))
        q = try LAPACK.orthonormalBasis(Matrix(rows: d, cols: d, storage: (0..<(d * d)).map { _ in rng.nextGaussian() }))
        for t in model.tensors where t.shape.count == 1 {
            if case .norm? = Self.role(of: t.name) { norms[t.name] = try model.floats(of: t) }
        }
    }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        guard let q, let role = Self.role(of: name) else {
            throw AttackError.missingContext(attack: "rotate", reason: "not prepared")
        }
        let d = q.rows
        switch role {
        case .norm:
            for i in values.indices { values[i] = 1 }
        case .embedding:
            values = BLAS.matmul(Matrix(rows: shape[0], cols: d, storage: values), q).storage
        case .reading(let norm):
            var w = Matrix(rows: shape[0], cols: shape[1], storage: values)
            if let g = norms[norm], g.count == d {
                for i in 0..<w.rows { for j in 0..<d { w.storage[i * d + j] *= g[j] } }
            }
            values = BLAS.matmul(w, q).storage
        case .writing:
            values = BLAS.matmul(q, Matrix(rows: shape[0], cols: shape[1], storage: values), transA: .transposed).storage
        }
    }
}

import Foundation
import LinearAlgebra
import TensorIO

/// The logits of a causal Llama-family decoder (Hugging Face `LlamaForCausalLM`): token embedding, then per layer
/// RMSNorm → grouped-query self-attention with rotary position embeddings → residual → RMSNorm → SwiGLU MLP →
/// residual, then a final RMSNorm and the LM head (the token embedding itself when the config ties them).
///
/// Rotary embeddings follow the Hugging Face layout: within each head, dimension i pairs with i + head_dim/2
/// (`rotate_half`), at angle `position · rope_theta^(−2i/head_dim)`:
///
/// ```
/// q'[i]            = q[i] cos θ_i − q[i + h/2] sin θ_i
/// q'[i + h/2]      = q[i + h/2] cos θ_i + q[i] sin θ_i
/// ```
///
/// Runs in single precision on the BLAS wrappers (norms and softmax sums in double); every weight is read by its
/// Hugging Face name under any prefix (`model.`, `leaked.model.` …); optional q/k/v/o and MLP biases are used when
/// the checkpoint has them. Measures how much of a model's function an attack kept, never used by detection.
public struct LlamaDecoder: Sendable {
    struct Layer: Sendable {
        var inputNorm: [Float], postAttentionNorm: [Float]
        var query: Matrix, key: Matrix, value: Matrix, output: Matrix
        var queryBias: [Float]?, keyBias: [Float]?, valueBias: [Float]?, outputBias: [Float]?
        var gate: Matrix, up: Matrix, down: Matrix
        var gateBias: [Float]?, upBias: [Float]?, downBias: [Float]?
    }

    public let config: LlamaConfig
    public let hidden: Int
    public let headDim: Int
    public let vocabulary: Int
    let embedding: Matrix
    let layers: [Layer]
    let finalNorm: [Float]
    /// `lm_head.weight`, or the embedding when the config ties them.
    let head: Matrix

    /// Why a model cannot be run as a Llama decoder.
    public enum LoadError: Error, CustomStringConvertible {
        case missing(tensor: String, path: String, fix: String)
        case shape(tensor: String, shape: [Int], expected: [Int], path: String)
        case heads(String)
        public var description: String {
            switch self {
            case let .missing(tensor, path, fix): "\(path): no tensor \(tensor); \(fix)"
            case let .shape(tensor, shape, expected, path):
                "\(path): \(tensor) has shape \(shape), expected \(expected) from config.json and the embedding width; check num_attention_heads, num_key_value_heads and head_dim"
            case let .heads(problem): "config.json: \(problem)"
            }
        }
    }

    static let anchor = "embed_tokens.weight"

    /// Whether `names` look like a Llama-layout decoder this type can run.
    public static func recognizes(_ names: [String]) -> Bool {
        names.contains { $0.hasSuffix(anchor) } && names.contains { $0.hasSuffix("layers.0.self_attn.q_proj.weight") }
            && names.contains { $0.hasSuffix("layers.0.mlp.gate_proj.weight") }
    }

    /// Loads the decoder from `source`.
    /// - Parameters:
    ///   - config: heads, key/value heads, head size, RMSNorm ε, rotary base and tying, from the model's config.json.
    ///   - overrides: tensors to take instead of the source's (an attacked model held in memory), by full name.
    /// - Throws: `LoadError` naming the tensor and the file when a weight is missing or has the wrong shape.
    public init(source: any TensorSource, config: LlamaConfig, overrides: [String: [Float]] = [:]) throws {
        let names = source.sourceTensors.map(\.name)
        guard let anchorName = names.first(where: { $0.hasSuffix(Self.anchor) }),
              let e = source.sourceTensor(named: anchorName), e.shape.count == 2 else {
            throw LoadError.missing(tensor: "model.embed_tokens.weight", path: source.path, fix: "a Llama decoder (Hugging Face names) is needed to measure function kept")
        }
        let prefix = String(anchorName.dropLast(Self.anchor.count))
        let (vocab, d) = (e.shape[0], e.shape[1])
        guard config.heads > 0, config.kvHeads > 0, config.heads % config.kvHeads == 0 else {
            throw LoadError.heads("num_key_value_heads \(config.kvHeads) does not divide num_attention_heads \(config.heads)")
        }
        if config.headDim == nil, d % config.heads != 0 {
            throw LoadError.heads("num_attention_heads \(config.heads) does not divide the hidden size \(d); set head_dim")
        }
        let hd = config.headDim ?? d / config.heads
        guard hd % 2 == 0 else { throw LoadError.heads("head_dim \(hd) is odd; rotary embeddings pair dimensions") }

        func values(_ full: String, _ shape: [Int]) throws -> [Float] {
            guard let t = source.sourceTensor(named: full) else {
                throw LoadError.missing(tensor: full, path: source.path, fix: "a Llama decoder (Hugging Face names) is needed to measure function kept")
            }
            guard t.shape == shape else { throw LoadError.shape(tensor: full, shape: t.shape, expected: shape, path: source.path) }
            if let o = overrides[full] { return o }
            return try source.decodeFloats(named: full)
        }
        func optional(_ full: String, _ count: Int) throws -> [Float]? {
            source.sourceTensor(named: full) == nil ? nil : try values(full, [count])
        }
        func matrix(_ full: String, _ rows: Int, _ cols: Int) throws -> Matrix {
            Matrix(rows: rows, cols: cols, storage: try values(full, [rows, cols]))
        }
        let (qDim, kvDim) = (config.heads * hd, config.kvHeads * hd)
        var layers: [Layer] = []
        var l = 0
        while names.contains(prefix + "layers.\(l).self_attn.q_proj.weight") {
            let p = prefix + "layers.\(l)."
            let ffn = source.sourceTensor(named: p + "mlp.gate_proj.weight")?.shape.first ?? 0
            layers.append(Layer(
                inputNorm: try values(p + "input_layernorm.weight", [d]),
                postAttentionNorm: try values(p + "post_attention_layernorm.weight", [d]),
                query: try matrix(p + "self_attn.q_proj.weight", qDim, d), key: try matrix(p + "self_attn.k_proj.weight", kvDim, d),
                value: try matrix(p + "self_attn.v_proj.weight", kvDim, d), output: try matrix(p + "self_attn.o_proj.weight", d, qDim),
                queryBias: try optional(p + "self_attn.q_proj.bias", qDim), keyBias: try optional(p + "self_attn.k_proj.bias", kvDim),
                valueBias: try optional(p + "self_attn.v_proj.bias", kvDim), outputBias: try optional(p + "self_attn.o_proj.bias", d),
                gate: try matrix(p + "mlp.gate_proj.weight", ffn, d), up: try matrix(p + "mlp.up_proj.weight", ffn, d),
                down: try matrix(p + "mlp.down_proj.weight", d, ffn),
                gateBias: try optional(p + "mlp.gate_proj.bias", ffn), upBias: try optional(p + "mlp.up_proj.bias", ffn),
                downBias: try optional(p + "mlp.down_proj.bias", d)))
            l += 1
        }
        embedding = try matrix(anchorName, vocab, d)
        finalNorm = try values(prefix + "norm.weight", [d])
        if config.tiedEmbeddings {
            head = embedding
        } else {
            guard let lmHead = names.first(where: { $0.hasSuffix("lm_head.weight") }) else {
                throw LoadError.missing(tensor: "lm_head.weight", path: source.path,
                                        fix: "config.json does not set tie_word_embeddings, so the LM head must be stored")
            }
            head = try matrix(lmHead, vocab, d)
        }
        self.config = config
        self.layers = layers
        hidden = d
        headDim = hd
        vocabulary = vocab
    }

    /// The logits at every position of one token sequence (causal: position t sees tokens 0…t).
    /// - Returns: an n × vocabulary matrix; row t scores the token that follows position t.
    /// - Complexity: O(n · parameters + layers · heads · n² · head_dim).
    public func logits(tokens: [Int]) -> Matrix {
        let n = tokens.count, d = hidden, hd = headDim
        let (heads, kvHeads) = (config.heads, config.kvHeads)
        precondition(n > 0, "logits: an empty token sequence")
        var x = Matrix(rows: n, cols: d)
        for (t, id) in tokens.enumerated() {
            precondition(id >= 0 && id < vocabulary, "logits: token id \(id) outside the vocabulary of \(vocabulary)")
            for j in 0..<d { x.storage[t * d + j] = embedding[id, j] }
        }
        // cos and sin of position t at frequency i, angles in double precision.
        let half = hd / 2
        var cosines = [Float](repeating: 0, count: n * half), sines = [Float](repeating: 0, count: n * half)
        for i in 0..<half {
            let frequency = Foundation.pow(config.ropeTheta, -2 * Double(i) / Double(hd))
            for t in 0..<n {
                let angle = Double(t) * frequency
                cosines[t * half + i] = Float(Foundation.cos(angle)); sines[t * half + i] = Float(Foundation.sin(angle))
            }
        }
        func rotate(_ m: inout Matrix, heads: Int) {
            for t in 0..<n {
                for h in 0..<heads {
                    let base = t * m.cols + h * hd
                    for i in 0..<half {
                        let (a, b) = (m.storage[base + i], m.storage[base + i + half])
                        let (c, s) = (cosines[t * half + i], sines[t * half + i])
                        m.storage[base + i] = a * c - b * s
                        m.storage[base + i + half] = b * c + a * s
                    }
                }
            }
        }
        for layer in layers {
            var h = Self.rmsNormalized(x, layer.inputNorm, epsilon: config.rmsNormEpsilon)
            var q = Self.linear(h, layer.query, layer.queryBias), k = Self.linear(h, layer.key, layer.keyBias)
            let v = Self.linear(h, layer.value, layer.valueBias)
            rotate(&q, heads: heads)
            rotate(&k, heads: kvHeads)
            let context = Attention.context(q: q, k: k, v: v, heads: heads, kvHeads: kvHeads, headDim: hd, causal: true)
            let attended = Self.linear(context, layer.output, layer.outputBias)
            for i in 0..<x.count { x.storage[i] += attended.storage[i] }
            h = Self.rmsNormalized(x, layer.postAttentionNorm, epsilon: config.rmsNormEpsilon)
            var gate = Self.linear(h, layer.gate, layer.gateBias)
            let up = Self.linear(h, layer.up, layer.upBias)
            for i in 0..<gate.count {
                let g = gate.storage[i]
                gate.storage[i] = g / (1 + Foundation.exp(-g)) * up.storage[i] // SiLU(gate) ⊙ up
            }
            let mlp = Self.linear(gate, layer.down, layer.downBias)
            for i in 0..<x.count { x.storage[i] += mlp.storage[i] }
        }
        return Self.linear(Self.rmsNormalized(x, finalNorm, epsilon: config.rmsNormEpsilon), head, nil)
    }

    /// x Wᵀ (+ b).
    static func linear(_ x: Matrix, _ w: Matrix, _ b: [Float]?) -> Matrix {
        var y = Matrix(rows: x.rows, cols: w.rows)
        if let b { for i in 0..<x.rows { for j in 0..<w.rows { y.storage[i * w.rows + j] = b[j] } } }
        BLAS.gemm(x, w, transB: .transposed, beta: b == nil ? 0 : 1, into: &y)
        return y
    }

    /// Each row divided by its root mean square (ε inside the root), times the norm weight.
    static func rmsNormalized(_ x: Matrix, _ weight: [Float], epsilon: Double) -> Matrix {
        var y = x
        let d = x.cols
        for i in 0..<x.rows {
            var sq = 0.0
            for j in 0..<d { let v = Double(x.storage[i * d + j]); sq += v * v }
            let inverse = 1 / (sq / Double(d) + epsilon).squareRoot()
            for j in 0..<d { y.storage[i * d + j] = Float(Double(x.storage[i * d + j]) * inverse) * weight[j] }
        }
        return y
    }
}

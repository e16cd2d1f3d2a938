import Foundation
import LinearAlgebra
import TensorIO

/// Sentence embeddings of a BERT encoder (sentence-transformers style): token, position and segment-0 embeddings,
/// LayerNorm, the encoder layers (multi-head self-attention and a GELU feed-forward block, each followed by a residual
/// connection and LayerNorm: post-LN as in the original BERT), mean pooling over the tokens, L2 normalization.
///
/// Runs in single precision on the BLAS wrappers; every weight is read by its Hugging Face name (with any prefix,
/// e.g. `bert.`). Used to measure how much of a model's function an attack kept, never by detection.
public struct BertEncoder: Sendable {
    public struct Layer: Sendable {
        var query: Matrix, key: Matrix, value: Matrix, attentionOutput: Matrix, intermediate: Matrix, output: Matrix
        var queryBias: [Float], keyBias: [Float], valueBias: [Float], attentionOutputBias: [Float], intermediateBias: [Float], outputBias: [Float]
        var attentionNorm: (weight: [Float], bias: [Float]), outputNorm: (weight: [Float], bias: [Float])
    }

    public let hidden: Int
    public let heads: Int
    public let layerNormEpsilon: Float
    let words: Matrix, positions: Matrix, segments: Matrix
    let embeddingNorm: (weight: [Float], bias: [Float])
    let layers: [Layer]

    /// Why a model cannot be run as a BERT encoder.
    public enum LoadError: Error, CustomStringConvertible {
        case missing(tensor: String, path: String)
        case shape(tensor: String, shape: [Int], expected: [Int], path: String)
        case heads(heads: Int, hidden: Int)
        public var description: String {
            switch self {
            case let .missing(tensor, path): "\(path): no tensor \(tensor); a BERT encoder (Hugging Face names) is needed to measure function kept"
            case let .shape(tensor, shape, expected, path): "\(path): \(tensor) has shape \(shape), expected \(expected)"
            case let .heads(heads, hidden): "\(heads) attention heads do not divide the hidden size \(hidden)"
            }
        }
    }

    /// Whether `names` look like a BERT encoder this type can run.
    public static func recognizes(_ names: [String]) -> Bool {
        names.contains { $0.hasSuffix("embeddings.word_embeddings.weight") } && names.contains { $0.hasSuffix("encoder.layer.0.attention.self.query.weight") }
    }

    /// Loads the encoder from `source`.
    /// - Parameters:
    ///   - heads: attention heads (config.json's `num_attention_heads`).
    ///   - overrides: tensors to take instead of the source's (an attacked model held in memory).
    public init(source: any TensorSource, heads: Int, layerNormEpsilon: Float = 1e-12,
                overrides: [String: [Float]] = [:]) throws {
        let names = source.sourceTensors.map(\.name)
        guard let anchor = names.first(where: { $0.hasSuffix("embeddings.word_embeddings.weight") }) else {
            throw LoadError.missing(tensor: "embeddings.word_embeddings.weight", path: source.path)
        }
        let prefix = String(anchor.dropLast("embeddings.word_embeddings.weight".count))
        func values(_ name: String, _ shape: [Int]) throws -> [Float] {
            let full = prefix + name
            guard let t = source.sourceTensor(named: full) else { throw LoadError.missing(tensor: full, path: source.path) }
            guard t.shape == shape else { throw LoadError.shape(tensor: full, shape: t.shape, expected: shape, path: source.path) }
            if let o = overrides[full] { return o }
            return try source.decodeFloats(named: full)
        }
        guard let wt = source.sourceTensor(named: anchor), wt.shape.count == 2 else { throw LoadError.missing(tensor: anchor, path: source.path) }
        let d = wt.shape[1]
        guard heads > 0, d % heads == 0 else { throw LoadError.heads(heads: heads, hidden: d) }
        func matrix(_ name: String) throws -> Matrix {
            let full = prefix + name
            guard let t = source.sourceTensor(named: full), t.shape.count == 2 else { throw LoadError.missing(tensor: full, path: source.path) }
            return Matrix(rows: t.shape[0], cols: t.shape[1], storage: try values(name, t.shape))
        }
        hidden = d
        self.heads = heads
        self.layerNormEpsilon = layerNormEpsilon
        words = try matrix("embeddings.word_embeddings.weight")
        positions = try matrix("embeddings.position_embeddings.weight")
        segments = try matrix("embeddings.token_type_embeddings.weight")
        embeddingNorm = (try values("embeddings.LayerNorm.weight", [d]), try values("embeddings.LayerNorm.bias", [d]))
        var layers: [Layer] = []
        var l = 0
        while names.contains(prefix + "encoder.layer.\(l).attention.self.query.weight") {
            let p = "encoder.layer.\(l)."
            let inter = try matrix(p + "intermediate.dense.weight")
            layers.append(Layer(
                query: try matrix(p + "attention.self.query.weight"), key: try matrix(p + "attention.self.key.weight"),
                value: try matrix(p + "attention.self.value.weight"), attentionOutput: try matrix(p + "attention.output.dense.weight"),
                intermediate: inter, output: try matrix(p + "output.dense.weight"),
                queryBias: try values(p + "attention.self.query.bias", [d]), keyBias: try values(p + "attention.self.key.bias", [d]),
                valueBias: try values(p + "attention.self.value.bias", [d]), attentionOutputBias: try values(p + "attention.output.dense.bias", [d]),
                intermediateBias: try values(p + "intermediate.dense.bias", [inter.rows]), outputBias: try values(p + "output.dense.bias", [d]),
                attentionNorm: (try values(p + "attention.output.LayerNorm.weight", [d]), try values(p + "attention.output.LayerNorm.bias", [d])),
                outputNorm: (try values(p + "output.LayerNorm.weight", [d]), try values(p + "output.LayerNorm.bias", [d]))))
            l += 1
        }
        self.layers = layers
    }

    /// The L2-normalized mean-pooled sentence embedding of one tokenized sentence (with its [CLS] and [SEP] ids).
    public func embed(tokens: [Int]) -> [Float] {
        let n = tokens.count, d = hidden
        precondition(n > 0 && n <= positions.rows, "embed: \(n) tokens, the model takes 1…\(positions.rows)")
        var x = Matrix(rows: n, cols: d)
        for (t, id) in tokens.enumerated() {
            precondition(id >= 0 && id < words.rows, "embed: token id \(id) outside the vocabulary of \(words.rows)")
            for j in 0..<d { x.storage[t * d + j] = words[id, j] + positions[t, j] + segments[0, j] }
        }
        layerNorm(&x, embeddingNorm)
        let hd = d / heads
        for layer in layers {
            let q = linear(x, layer.query, layer.queryBias), k = linear(x, layer.key, layer.keyBias), v = linear(x, layer.value, layer.valueBias)
            let context = Attention.context(q: q, k: k, v: v, heads: heads, kvHeads: heads, headDim: hd, causal: false)
            var attended = linear(context, layer.attentionOutput, layer.attentionOutputBias)
            for i in 0..<attended.count { attended.storage[i] += x.storage[i] }
            layerNorm(&attended, layer.attentionNorm)
            x = attended
            var inner = linear(x, layer.intermediate, layer.intermediateBias)
            for i in 0..<inner.count {
                let z = inner.storage[i]
                inner.storage[i] = 0.5 * z * (1 + Foundation.erf(z / Float(2).squareRoot()))
            }
            var out = linear(inner, layer.output, layer.outputBias)
            for i in 0..<out.count { out.storage[i] += x.storage[i] }
            layerNorm(&out, layer.outputNorm)
            x = out
        }
        var pooled = [Double](repeating: 0, count: d)
        for t in 0..<n { for j in 0..<d { pooled[j] += Double(x.storage[t * d + j]) } }
        let norm = pooled.reduce(0) { $0 + $1 * $1 }.squareRoot()
        return pooled.map { Float(norm > 0 ? $0 / norm : 0) }
    }

    /// x Wᵀ + b.
    func linear(_ x: Matrix, _ w: Matrix, _ b: [Float]) -> Matrix {
        var y = Matrix(rows: x.rows, cols: w.rows)
        for i in 0..<x.rows { for j in 0..<w.rows { y.storage[i * w.rows + j] = b[j] } }
        BLAS.gemm(x, w, transB: .transposed, beta: 1, into: &y)
        return y
    }

    func layerNorm(_ x: inout Matrix, _ p: (weight: [Float], bias: [Float])) {
        let d = x.cols
        for i in 0..<x.rows {
            var mean = 0.0, sq = 0.0
            for j in 0..<d { mean += Double(x.storage[i * d + j]) }
            mean /= Double(d)
            for j in 0..<d { let c = Double(x.storage[i * d + j]) - mean; sq += c * c }
            let inv = 1 / (sq / Double(d) + Double(layerNormEpsilon)).squareRoot()
            for j in 0..<d { x.storage[i * d + j] = Float((Double(x.storage[i * d + j]) - mean) * inv) * p.weight[j] + p.bias[j] }
        }
    }
}

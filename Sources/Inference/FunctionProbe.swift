import Foundation
import LinearAlgebra
import TensorIO

/// Fixed token-id sequences for measuring a causal language model's function kept, for any vocabulary and without a
/// tokenizer or a download: 8 sequences of 8, 12, …, 36 ids drawn uniformly from 3..<vocabulary (ids 0–2 are the
/// special tokens of SentencePiece Llama vocabularies) by SplitMix64 from seed 16. A synthetic model has no text to
/// read; a real one is still a function of these inputs, and a function-preserving edit keeps every logit.
public enum ProbeTokens {
    public static let lengths = [8, 12, 16, 20, 24, 28, 32, 36]

    public static func sequences(vocabulary: Int) -> [[Int]] {
        precondition(vocabulary > 0)
        let low = vocabulary > 3 ? 3 : 0
        var rng = SplitMix64(seed: 16)
        return lengths.map { n in (0..<n).map { _ in low + Int(rng.next() % UInt64(vocabulary - low)) } }
    }
}

/// What a function probe returns for the probe inputs.
public struct ProbeOutputs: Sendable {
    /// One vector per probe input: a BERT sentence embedding, or a Llama's logits at the last position.
    public var vectors: [[Float]]
    /// Causal language models: per probe input, the argmax token at every position.
    public var predictions: [[Int]]?
}

/// The forward pass that measures a model's function kept: a BERT encoder's sentence embeddings of
/// `ProbeSentences`, or a Llama decoder's logits on `ProbeTokens`.
///
/// For a Llama the compared vector is the logits at the last position, not a hidden state: logits are what the model
/// outputs, so every function-preserving edit keeps them exactly, while hidden states live in a basis a residual
/// rotation changes (a rotated copy computes the same function with hidden-state cosine far from 1). The top-1 share
/// looks at every position (176 next-token predictions).
public enum FunctionProbe: Sendable, Equatable {
    case bert(heads: Int)
    case llama(LlamaConfig)

    /// The probe for a model with these tensor names: BERT when `bertHeads` is known, Llama when `llama` (its
    /// config.json) is; nil when neither applies.
    public static func recognize(names: [String], bertHeads: Int?, llama: LlamaConfig?) -> FunctionProbe? {
        if let bertHeads, BertEncoder.recognizes(names) { return .bert(heads: bertHeads) }
        if let llama, LlamaDecoder.recognizes(names) { return .llama(llama) }
        return nil
    }

    /// What is compared, for reports and plot axes.
    public var measure: String {
        switch self {
        case .bert: "sentence embeddings of \(ProbeSentences.uncasedBERT.count) probe sentences"
        case .llama: "last-position logits of \(ProbeTokens.lengths.count) fixed token sequences"
        }
    }

    /// Whether the model predicts next tokens (its outputs carry top-1 predictions).
    public var isCausal: Bool {
        if case .llama = self { return true }
        return false
    }

    /// Runs the probe inputs through `source` with `overrides` in place of its tensors (an attacked model in memory).
    /// - Throws: the forward pass's `LoadError` when a weight is missing or mis-shaped.
    public func outputs(of source: any TensorSource, overrides: [String: [Float]] = [:]) throws -> ProbeOutputs {
        switch self {
        case .bert(let heads):
            let encoder = try BertEncoder(source: source, heads: heads, overrides: overrides)
            return ProbeOutputs(vectors: ProbeSentences.uncasedBERT.map(encoder.embed), predictions: nil)
        case .llama(let config):
            let decoder = try LlamaDecoder(source: source, config: config, overrides: overrides)
            var vectors: [[Float]] = [], predictions: [[Int]] = []
            for tokens in ProbeTokens.sequences(vocabulary: decoder.vocabulary) {
                let logits = decoder.logits(tokens: tokens)
                let v = logits.cols
                vectors.append(Array(logits.storage[((logits.rows - 1) * v)...]))
                predictions.append((0..<logits.rows).map { t in
                    var best = 0
                    for j in 1..<v where logits.storage[t * v + j] > logits.storage[t * v + best] { best = j }
                    return best
                })
            }
            return ProbeOutputs(vectors: vectors, predictions: predictions)
        }
    }
}

extension FunctionKept {
    /// Cosines of the probe vectors and, when both sides have them, the top-1 agreement over every position.
    public init(reference: ProbeOutputs, attacked: ProbeOutputs) {
        self.init(reference: reference.vectors, attacked: attacked.vectors)
        if let r = reference.predictions, let a = attacked.predictions {
            precondition(r.map(\.count) == a.map(\.count), "FunctionKept: predictions of different lengths")
            let same = zip(r, a).reduce(0) { n, pair in n + zip(pair.0, pair.1).filter { $0 == $1 }.count }
            top1Agreement = Double(same) / Double(max(1, r.reduce(0) { $0 + $1.count }))
        }
    }
}

import Foundation
import TensorIO

/// Where a transformer's function-preserving symmetries live: per layer, the attention projections (heads) and the
/// feed-forward projections (hidden units), plus the matrices that read from and write to the residual stream.
///
/// Recognized from Hugging Face names (any prefix, e.g. `bert.`): BERT (`encoder.layer.N.attention.self.query`, …,
/// `intermediate.dense`, `output.dense`) and Llama (`model.layers.N.self_attn.q_proj`, …, `mlp.gate_proj`, …).
public struct TransformerLayout: Sendable, Equatable {
    public enum Family: String, Sendable, Codable { case bert, llama }

    /// The feed-forward non-linearity, which decides which per-unit rescalings are function-preserving.
    public enum Activation: String, Sendable, Codable, CaseIterable {
        /// ReLU: a positive scale c on a unit's input row (and bias) and 1/c on its output column.
        case relu
        /// GELU and other non-homogeneous functions: permutation only.
        case gelu
        /// SwiGLU (`down(silu(gate x) ⊙ up x)`): any non-zero scale c, sign included, on the up row and 1/c on the
        /// down column; the gate row is fixed.
        case swiglu
    }

    public struct Layer: Sendable, Equatable {
        public var index: Int
        public var query: String, key: String, value: String, attentionOutput: String
        /// Biases of q/k/v (BERT), permuted with their heads.
        public var queryBias: String?, keyBias: String?, valueBias: String?
        /// The FFN input projection(s): BERT's `intermediate.dense`, Llama's `up_proj`, and Llama's `gate_proj`.
        public var up: String
        public var upBias: String?
        public var gate: String?
        public var down: String
        /// Norms whose weights a rotation may fuse into the next matrices (Llama's RMSNorms).
        public var attentionNorm: String?, ffnNorm: String?
    }

    public var family: Family
    public var layers: [Layer]
    /// The token embedding (rows = tokens, columns = the residual stream).
    public var embedding: String?
    /// Output head reading the residual stream (Llama `lm_head`), and the norm in front of it.
    public var outputHead: String?
    public var finalNorm: String?
    /// Attention heads and key/value heads (grouped-query attention when fewer); nil when unknown.
    public var heads: Int?
    public var kvHeads: Int?
    public var activation: Activation

    /// Whether the residual stream may be rotated without changing the function: RMSNorm models (Llama), whose norm
    /// weights can be fused into the following matrices; BERT's LayerNorm subtracts the mean and does not commute.
    public var allowsResidualRotation: Bool { family == .llama }

    /// Recognizes the layout from tensor names; nil when neither family's names are present.
    /// - Parameter config: the model's config.json, when known (heads, activation).
    public static func recognize(names: [String], config: ModelConfig? = nil) -> TransformerLayout? {
        let set = Set(names)
        if let anchor = names.first(where: { $0.hasSuffix("encoder.layer.0.attention.self.query.weight") }) {
            let prefix = String(anchor.dropLast("encoder.layer.0.attention.self.query.weight".count))
            var layers: [Layer] = []
            for l in 0... {
                let p = prefix + "encoder.layer.\(l)."
                let need = [p + "attention.self.query.weight", p + "attention.self.key.weight", p + "attention.self.value.weight",
                            p + "attention.output.dense.weight", p + "intermediate.dense.weight", p + "output.dense.weight"]
                guard need.allSatisfy(set.contains) else { break }
                func opt(_ n: String) -> String? { set.contains(p + n) ? p + n : nil }
                layers.append(Layer(index: l, query: need[0], key: need[1], value: need[2], attentionOutput: need[3],
                                    queryBias: opt("attention.self.query.bias"), keyBias: opt("attention.self.key.bias"),
                                    valueBias: opt("attention.self.value.bias"),
                                    up: need[4], upBias: opt("intermediate.dense.bias"), gate: nil, down: need[5]))
            }
            let embedding = prefix + "embeddings.word_embeddings.weight"
            let act: Activation = config?.hiddenAct == "relu" ? .relu : .gelu
            return TransformerLayout(family: .bert, layers: layers, embedding: set.contains(embedding) ? embedding : nil,
                                     outputHead: nil, finalNorm: nil, heads: config?.heads, kvHeads: config?.heads, activation: act)
        }
        if let anchor = names.first(where: { $0.hasSuffix("layers.0.self_attn.q_proj.weight") }) {
            let prefix = String(anchor.dropLast("layers.0.self_attn.q_proj.weight".count))
            var layers: [Layer] = []
            for l in 0... {
                let p = prefix + "layers.\(l)."
                let need = [p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight",
                            p + "self_attn.o_proj.weight", p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"]
                guard need.allSatisfy(set.contains) else { break }
                func opt(_ n: String) -> String? { set.contains(p + n) ? p + n : nil }
                layers.append(Layer(index: l, query: need[0], key: need[1], value: need[2], attentionOutput: need[3],
                                    up: need[4], gate: opt("mlp.gate_proj.weight"), down: need[5],
                                    attentionNorm: opt("input_layernorm.weight"), ffnNorm: opt("post_attention_layernorm.weight")))
            }
            func opt(_ n: String) -> String? { set.contains(n) ? n : nil }
            let head = opt("lm_head.weight") ?? opt(prefix.replacingOccurrences(of: "model.", with: "") + "lm_head.weight")
            let act: Activation = layers.first?.gate != nil ? .swiglu : (config?.hiddenAct == "relu" ? .relu : .gelu)
            return TransformerLayout(family: .llama, layers: layers, embedding: opt(prefix + "embed_tokens.weight"),
                                     outputHead: head, finalNorm: opt(prefix + "norm.weight"),
                                     heads: config?.heads, kvHeads: config?.kvHeads ?? config?.heads, activation: act)
        }
        return nil
    }
}

/// The few config.json fields alignment needs.
public struct ModelConfig: Sendable, Equatable {
    public var heads: Int?
    public var kvHeads: Int?
    public var hiddenAct: String?

    public init(heads: Int? = nil, kvHeads: Int? = nil, hiddenAct: String? = nil) {
        self.heads = heads; self.kvHeads = kvHeads; self.hiddenAct = hiddenAct
    }

    /// Reads config.json from `path` when it is a folder, or from the folder holding the file `path`; nil when there
    /// is none or it is not a JSON object.
    public static func load(near path: String) -> ModelConfig? {
        guard let file = ShippedConfig.sidecar("config.json", near: path), let object = ShippedConfig.jsonObject(at: file) else { return nil }
        let heads = object["num_attention_heads"] as? Int
        return ModelConfig(heads: heads, kvHeads: (object["num_key_value_heads"] as? Int) ?? heads,
                           hiddenAct: (object["hidden_act"] as? String) ?? (object["hidden_activation"] as? String))
    }
}

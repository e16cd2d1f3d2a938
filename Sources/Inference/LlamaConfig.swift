import Foundation
import TensorIO

/// What the Llama forward pass needs from a model's Hugging Face `config.json`, with the defaults of
/// `transformers`' `LlamaConfig` for the fields a checkpoint may leave out.
///
/// Read by name: `num_attention_heads`, `num_key_value_heads` (default: the head count), `head_dim` (default:
/// `hidden_size / num_attention_heads`), `rms_norm_eps` (default 1e-6), `rope_theta` (default 10000),
/// `tie_word_embeddings` (default false), `hidden_act` (must be `silu`), `rope_scaling` (must be absent or null:
/// the scaled variants change the rotary frequencies and are not implemented).
public struct LlamaConfig: Sendable, Equatable, Codable {
    public var heads: Int
    public var kvHeads: Int
    /// nil: `hidden_size / heads`, resolved against the weights.
    public var headDim: Int?
    public var rmsNormEpsilon: Double
    public var ropeTheta: Double
    public var tiedEmbeddings: Bool

    public init(heads: Int, kvHeads: Int? = nil, headDim: Int? = nil, rmsNormEpsilon: Double = 1e-6,
                ropeTheta: Double = 10000, tiedEmbeddings: Bool = false) {
        self.heads = heads; self.kvHeads = kvHeads ?? heads; self.headDim = headDim
        self.rmsNormEpsilon = rmsNormEpsilon; self.ropeTheta = ropeTheta; self.tiedEmbeddings = tiedEmbeddings
    }

    /// Why a config.json cannot drive the Llama forward pass.
    public enum LoadError: Error, CustomStringConvertible, Equatable {
        case unreadable(path: String)
        case field(path: String, name: String, problem: String)
        public var description: String {
            switch self {
            case let .unreadable(path): "\(path): not a JSON object; the Llama function probe needs the model's Hugging Face config.json"
            case let .field(path, name, problem): "\(path): \(name) \(problem)"
            }
        }
    }

    /// The model types whose config carries the fields above with the same meaning (Llama and its layout twins).
    static let modelTypes: Set<String> = ["llama", "mistral"]

    /// Reads config.json from `path` when it is a folder, or from the folder holding the file `path`.
    /// - Returns: nil when there is no config.json or it describes another model type.
    /// - Throws: `LoadError` when it is a Llama config the forward pass cannot follow (the message names the field).
    public static func load(near path: String) throws -> LlamaConfig? {
        guard let file = ShippedConfig.sidecar("config.json", near: path) else { return nil }
        guard let object = ShippedConfig.jsonObject(at: file) else { throw LoadError.unreadable(path: file) }
        return try parse(object, path: file)
    }

    /// The config for a decoded config.json object; nil when `model_type` names another family.
    public static func parse(_ object: [String: Any], path: String) throws -> LlamaConfig? {
        if let type = object["model_type"] as? String, !modelTypes.contains(type) { return nil }
        if object["model_type"] == nil, !((object["architectures"] as? [String])?.contains { $0.hasPrefix("Llama") } ?? false) { return nil }
        // JSONSerialization hands numbers out as Int, Double or NSNumber depending on the platform.
        func number(_ v: Any) -> Double? {
            if let i = v as? Int { return Double(i) }
            if let d = v as? Double { return d }
            return (v as? NSNumber)?.doubleValue
        }
        func integer(_ name: String) throws -> Int? {
            guard let v = object[name], !(v is NSNull) else { return nil }
            guard let d = number(v), let i = Int(exactly: d), i > 0 else {
                throw LoadError.field(path: path, name: name, problem: "is \(v), expected a positive integer")
            }
            return i
        }
        func real(_ name: String) throws -> Double? {
            guard let v = object[name], !(v is NSNull) else { return nil }
            guard let d = number(v), d.isFinite, d > 0 else {
                throw LoadError.field(path: path, name: name, problem: "is \(v), expected a positive number")
            }
            return d
        }
        guard let heads = try integer("num_attention_heads") else {
            throw LoadError.field(path: path, name: "num_attention_heads", problem: "is missing; add the model's head count")
        }
        if let act = (object["hidden_act"] ?? object["hidden_activation"]) as? String, act != "silu" {
            throw LoadError.field(path: path, name: "hidden_act", problem: "is \(act); the Llama forward pass implements SwiGLU (silu) only")
        }
        if let scaling = object["rope_scaling"], !(scaling is NSNull) {
            throw LoadError.field(path: path, name: "rope_scaling", problem: "is set (\(scaling)); scaled rotary embeddings are not implemented, so function kept is not measured for this model")
        }
        let kvHeads = try integer("num_key_value_heads") ?? heads
        guard heads % kvHeads == 0 else {
            throw LoadError.field(path: path, name: "num_key_value_heads", problem: "\(kvHeads) does not divide num_attention_heads \(heads)")
        }
        let tied = object["tie_word_embeddings"].map { ($0 as? Bool) ?? (($0 as? NSNumber)?.boolValue ?? false) } ?? false
        return LlamaConfig(heads: heads, kvHeads: kvHeads, headDim: try integer("head_dim"),
                           rmsNormEpsilon: try real("rms_norm_eps") ?? 1e-6, ropeTheta: try real("rope_theta") ?? 10000,
                           tiedEmbeddings: tied)
    }
}

import Foundation

/// Converts a Hugging Face safetensors model to GGUF as llama.cpp's converter does for BERT- and
/// Llama-family models: GGUF tensor names, the rotary q/k row permutation (Llama), 1-D tensors in F32,
/// weight matrices in the requested type (with llama-quantize's fallback where rows do not split into
/// blocks), and the hyperparameters a loader needs.
public enum GGUFConverter {
    /// Types `convert` can write.
    public static let outputTypes: [GGMLType] = [.f16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q6_K]

    /// llama.cpp's `general.file_type` for an output type.
    static func fileType(_ t: GGMLType) -> UInt32 {
        switch t {
        case .f32: 0
        case .f16: 1
        case .q4_0: 2
        case .q4_1: 3
        case .q8_0: 7
        case .q5_0: 8
        case .q5_1: 9
        case .q4_K: 15
        case .q6_K: 18
        default: 0
        }
    }

    public struct Report: Sendable {
        public var architecture: GGUFArchitecture
        public var tensors: Int
        public var dropped: [String]
        public var fallbacks: [String: GGMLType]
        public var bytes: Int
    }

    public enum ConversionError: Error, CustomStringConvertible {
        case unknownArchitecture(String)
        case missingHyperparameter(String, path: String)
        case unsupportedType(String)
        public var description: String {
            switch self {
            case let .unknownArchitecture(p): "\(p): not a BERT or Llama layout (no encoder.layer.N.* or model.layers.N.* tensors); only those families are converted"
            case let .missingHyperparameter(k, p): "\(p): config.json must give \(k) (needed for the GGUF header and the q/k permutation)"
            case let .unsupportedType(t): "cannot write \(t); choose one of \(outputTypes.map(\.name).joined(separator: ", "))"
            }
        }
    }

    static func detectArchitecture(_ model: SafetensorsModel) -> GGUFArchitecture? {
        if model.tensors.contains(where: { $0.name.hasPrefix("encoder.layer.") }) { return .bert }
        if model.tensors.contains(where: { $0.name.hasPrefix("model.layers.") }) { return .llama }
        return nil
    }

    static func config(of model: SafetensorsModel) -> [String: Any] {
        let dir = model.layout == .file ? (model.path as NSString).deletingLastPathComponent : model.path
        guard let data = FileManager.default.contents(atPath: (dir as NSString).appendingPathComponent("config.json")),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
        return obj
    }

    public static func convert(_ model: SafetensorsModel, type: GGMLType, to path: String, overwrite: Bool) throws -> Report {
        guard outputTypes.contains(type) else { throw ConversionError.unsupportedType(type.name) }
        guard let arch = detectArchitecture(model) else { throw ConversionError.unknownArchitecture(model.path) }
        let cfg = config(of: model)
        func int(_ key: String) -> Int? { (cfg[key] as? NSNumber)?.intValue }
        func double(_ key: String) -> Double? { (cfg[key] as? NSNumber)?.doubleValue }
        let layerPrefix = arch == .bert ? "encoder.layer." : "model.layers."
        let layers = Set(model.tensors.compactMap { t -> Int? in
            guard t.name.hasPrefix(layerPrefix) else { return nil }
            return Int(t.name.dropFirst(layerPrefix.count).prefix { $0.isNumber })
        }).count
        let embed = model.tensor(named: arch == .bert ? "embeddings.word_embeddings.weight" : "model.embed_tokens.weight")
        let hidden = int("hidden_size") ?? embed?.shape[1] ?? 0
        let ffnName = arch == .bert ? "encoder.layer.0.intermediate.dense.weight" : "model.layers.0.mlp.up_proj.weight"
        let ffn = int("intermediate_size") ?? model.tensor(named: ffnName)?.shape[0] ?? 0
        guard let heads = int("num_attention_heads") else {
            throw ConversionError.missingHyperparameter("num_attention_heads", path: model.path)
        }
        let kvHeads = int("num_key_value_heads") ?? heads
        let a = arch.rawValue
        var meta: [(key: String, value: GGUFValue)] = [
            ("general.architecture", .string(a)),
            ("general.name", .string((model.path as NSString).lastPathComponent)),
            ("general.file_type", .uint32(fileType(type))),
            ("general.quantization_version", .uint32(2)),
            ("\(a).block_count", .uint32(UInt32(layers))),
            ("\(a).context_length", .uint32(UInt32(int("max_position_embeddings") ?? 512))),
            ("\(a).embedding_length", .uint32(UInt32(hidden))),
            ("\(a).feed_forward_length", .uint32(UInt32(ffn))),
            ("\(a).attention.head_count", .uint32(UInt32(heads))),
        ]
        switch arch {
        case .bert:
            meta += [("\(a).attention.layer_norm_epsilon", .float32(Float(double("layer_norm_eps") ?? 1e-12))),
                     ("\(a).attention.causal", .bool(false)),
                     ("\(a).pooling_type", .uint32(1))]
            let dir = model.layout == .file ? (model.path as NSString).deletingLastPathComponent : model.path
            if let vocab = try? String(contentsOfFile: (dir as NSString).appendingPathComponent("vocab.txt"), encoding: .utf8) {
                let tokens = vocab.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter { !$0.isEmpty }
                meta += [("tokenizer.ggml.model", .string("bert")),
                         ("tokenizer.ggml.tokens", .array(elementType: 8, values: tokens.map { .string($0) })),
                         ("tokenizer.ggml.token_type", .array(elementType: 5, values: tokens.map { _ in .int32(1) }))]
            }
        case .llama:
            meta += [("\(a).attention.head_count_kv", .uint32(UInt32(kvHeads))),
                     ("\(a).attention.layer_norm_rms_epsilon", .float32(Float(double("rms_norm_eps") ?? 1e-5))),
                     ("\(a).rope.dimension_count", .uint32(UInt32(hidden / heads))),
                     ("\(a).rope.freq_base", .float32(Float(double("rope_theta") ?? 10000)))]
            if let v = int("vocab_size") { meta.append(("\(a).vocab_size", .uint32(UInt32(v)))) }
        }
        var out: [GGUFOutputTensor] = []
        var dropped: [String] = []
        var fallbacks: [String: GGMLType] = [:]
        var total = 0
        for t in model.tensors {
            guard let name = arch.ggufName(forHF: t.name), t.dtype.isSupportedFloat else { dropped.append(t.name); continue }
            var values = try model.floats(of: t)
            model.release(t)
            let shape = t.shape
            if shape.count == 2, let h = arch.rotaryHeads(forHF: t.name, heads: heads, kvHeads: kvHeads) {
                values = reorderRows(values, cols: shape[1], order: GGUFArchitecture.rotaryRowOrder(rows: shape[0], heads: h))
            }
            let outType: GGMLType
            let bytes: [UInt8]
            if shape.count != 2 {
                outType = .f32
                bytes = FloatConversion.encode(values, as: .f32)
            } else {
                let n = shape[1]
                var chosen = type
                if type != .f16 && n % type.blockLayout.elements != 0 {
                    chosen = (type == .q4_K && n % 32 == 0) ? .q5_0 : (type == .q6_K && n % 32 == 0) ? .q8_0 : .f16
                    fallbacks[t.name] = chosen
                }
                outType = chosen
                if chosen == .f16 {
                    bytes = FloatConversion.encode(values, as: .f16)
                } else {
                    var b: [UInt8] = []
                    b.reserveCapacity(values.count / chosen.blockLayout.elements * chosen.blockLayout.bytes)
                    for r in 0..<shape[0] { b += GGMLBlockCodec.quantize(Array(values[(r * n)..<((r + 1) * n)]), as: chosen) }
                    bytes = b
                }
            }
            total += bytes.count
            out.append(GGUFOutputTensor(name: name, shape: shape, type: outType, bytes: bytes))
        }
        try GGUFWriter.write(metadata: meta, tensors: out, to: path, overwrite: overwrite)
        return Report(architecture: arch, tensors: out.count, dropped: dropped, fallbacks: fallbacks, bytes: total)
    }
}

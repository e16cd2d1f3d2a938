import TensorIO
import Foundation

/// Converts a Hugging Face safetensors model to GGUF as llama.cpp's converter does for BERT- and
/// Llama-family models: GGUF tensor names, the rotary q/k row permutation (Llama), 1-D tensors, norms and
/// BERT's position and token-type embeddings in F32, other weight matrices in the requested type (with
/// llama-quantize's fallback where rows do not split into blocks), and the hyperparameters and tokenizer
/// metadata llama.cpp needs to load and run the file.
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
        /// What was written for the tokenizer (llama.cpp needs one to load the file).
        public var tokenizer: String
    }

    public enum ConversionError: Error, CustomStringConvertible {
        case unknownArchitecture(String)
        case missingHyperparameter(String, path: String)
        case unsupportedType(String)
        case invalidHyperparameter(String, value: Int, path: String)
        case nonFiniteWeights(tensor: String, count: Int, path: String)
        public var description: String {
            switch self {
            case let .nonFiniteWeights(t, n, p): "\(p): tensor \"\(t)\" holds \(n) NaN or infinite values, which llama.cpp rejects when it loads a GGUF file; repair the model before converting it"
            case let .unknownArchitecture(p): "\(p): not a BERT or Llama layout (no encoder.layer.N.* or model.layers.N.* tensors); only those families are converted"
            case let .missingHyperparameter(k, p): "\(p): config.json must give \(k) (needed for the GGUF header and the q/k permutation)"
            case let .invalidHyperparameter(k, v, p): "\(p): \(k) = \(v) is not a positive 32-bit count; fix config.json next to the weights"
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

    /// - Parameter progress: called after each tensor with the tensors done, their total and the tensor's name.
    public static func convert(_ model: SafetensorsModel, type: GGMLType, to path: String, overwrite: Bool,
                               progress: (Int, Int, String) -> Void = { _, _, _ in }) throws -> Report {
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
        /// A hyperparameter as GGUF's u32, checked: a config value that is zero, negative or too large is an error.
        func count(_ key: String, _ v: Int) throws -> GGUFValue {
            guard v > 0, let u = UInt32(exactly: v) else { throw ConversionError.invalidHyperparameter(key, value: v, path: model.path) }
            return .uint32(u)
        }
        _ = try count("num_attention_heads", heads)
        _ = try count("num_key_value_heads", kvHeads)
        let a = arch.rawValue
        let dir = model.layout == .file ? (model.path as NSString).deletingLastPathComponent : model.path
        var tokenizer = ""
        var meta: [(key: String, value: GGUFValue)] = [
            ("general.architecture", .string(a)),
            ("general.name", .string((model.path as NSString).lastPathComponent)),
            ("general.file_type", .uint32(fileType(type))),
            ("general.quantization_version", .uint32(2)),
            ("\(a).block_count", try count("num_hidden_layers", layers)),
            ("\(a).context_length", try count("max_position_embeddings", int("max_position_embeddings") ?? 512)),
            ("\(a).embedding_length", try count("hidden_size", hidden)),
            ("\(a).feed_forward_length", try count("intermediate_size", ffn)),
            ("\(a).attention.head_count", try count("num_attention_heads", heads)),
        ]
        switch arch {
        case .bert:
            let typeVocabulary = try count("type_vocab_size", int("type_vocab_size")
                                           ?? model.tensor(named: "embeddings.token_type_embeddings.weight")?.shape.first ?? 1)
            meta += [("\(a).attention.layer_norm_epsilon", .float32(Float(double("layer_norm_eps") ?? 1e-12))),
                     ("\(a).attention.causal", .bool(false)),
                     ("\(a).pooling_type", .uint32(poolingType(folder: dir)))]
            if let vocab = try GGUFVocabulary.wordPiece(folder: dir, typeVocabularySize: typeVocabulary) {
                meta += vocab
                tokenizer = "WordPiece vocab.txt (\(vocabCount(vocab)) tokens) in llama.cpp's form"
            } else {
                meta.append(("tokenizer.ggml.token_type_count", typeVocabulary))
                tokenizer = "none (no vocab.txt next to the weights): llama.cpp can load the weights but not tokenize"
            }
        case .llama:
            meta += [("\(a).attention.head_count_kv", try count("num_key_value_heads", kvHeads)),
                     ("\(a).attention.layer_norm_rms_epsilon", .float32(Float(double("rms_norm_eps") ?? 1e-5))),
                     ("\(a).rope.dimension_count", try count("hidden_size / num_attention_heads", hidden / heads)),
                     ("\(a).rope.freq_base", .float32(Float(double("rope_theta") ?? 10000)))]
            let vocabSize = int("vocab_size") ?? embed?.shape.first ?? 0
            meta.append(("\(a).vocab_size", try count("vocab_size", vocabSize)))
            let shipped = ["tokenizer.json", "tokenizer.model"].filter { FileManager.default.fileExists(atPath: (dir as NSString).appendingPathComponent($0)) }
            if !shipped.isEmpty {
                tokenizer = "not converted (\(shipped.joined(separator: ", ")) found; only BERT WordPiece vocabularies are converted): llama.cpp cannot load the file without one"
            } else if let vocab = GGUFVocabulary.placeholderSentencePiece(vocabularySize: vocabSize) {
                meta += vocab
                tokenizer = "placeholder byte-level SentencePiece vocabulary (\(vocabSize) tokens; the model ships no tokenizer)"
            } else {
                tokenizer = "none (vocabulary of \(vocabSize) is too small for a byte-level placeholder)"
            }
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
            if keepsF32(gguf: name, dimensions: shape.count) {
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
                let nonFinite = values.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
                guard nonFinite == 0 else { throw ConversionError.nonFiniteWeights(tensor: t.name, count: nonFinite, path: model.path) }
                if chosen == .f16 {
                    bytes = FloatConversion.encode(values, as: .f16)
                } else {
                    var b: [UInt8] = []
                    b.reserveCapacity(values.count / chosen.blockLayout.elements * chosen.blockLayout.bytes)
                    for r in 0..<shape[0] { b += GGMLQuantizer.quantize(Array(values[(r * n)..<((r + 1) * n)]), as: chosen) }
                    bytes = b
                }
            }
            total += bytes.count
            out.append(GGUFOutputTensor(name: name, shape: shape, type: outType, bytes: bytes))
            progress(out.count, model.tensors.count, t.name)
        }
        try GGUFWriter.write(metadata: meta, tensors: out, to: path, overwrite: overwrite)
        return Report(architecture: arch, tensors: out.count, dropped: dropped, fallbacks: fallbacks, bytes: total, tokenizer: tokenizer)
    }

    /// Tensors llama.cpp's converter stores in F32 whatever the output type (and its quantizer leaves alone):
    /// 1-D tensors, norms, and the position and token-type embeddings its BERT graph adds to F32 activations.
    static func keepsF32(gguf name: String, dimensions: Int) -> Bool {
        dimensions != 2 || name.hasSuffix("_norm.weight") || name == "position_embd.weight" || name == "token_types.weight"
    }

    /// llama.cpp's pooling type from sentence-transformers' `1_Pooling/config.json`: 2 (CLS) or 1 (mean, the default).
    static func poolingType(folder: String) -> UInt32 {
        let path = ((folder as NSString).appendingPathComponent("1_Pooling") as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: path),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return 1 }
        return (obj["pooling_mode_cls_token"] as? Bool) == true ? 2 : 1
    }

    static func vocabCount(_ meta: [(key: String, value: GGUFValue)]) -> Int {
        if case let .array(_, values)? = meta.first(where: { $0.key == "tokenizer.ggml.tokens" })?.value { return values.count }
        return 0
    }
}

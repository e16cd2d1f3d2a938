import TensorIO
import Foundation

/// The tokenizer metadata llama.cpp needs to load a converted model, in the form its `convert_hf_to_gguf.py`
/// writes: `tokenizer.ggml.*` keys with the token list, the token types and the special token ids.
enum GGUFVocabulary {
    /// llama.cpp's `llama_token_type` values.
    enum TokenType: Int32 {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    /// A WordPiece (BERT) vocabulary in llama.cpp's "phantom space" form: a word-initial piece gets a leading
    /// "▁", a continuation piece loses its "##", special tokens keep their text and are typed CONTROL.
    /// Reads `vocab.txt` (one token per line, the line number is the id) and the special tokens from
    /// `tokenizer.json` (added tokens marked special) or `special_tokens_map.json`.
    /// - Returns: nil when the folder has no `vocab.txt`.
    static func wordPiece(folder: String, typeVocabularySize: GGUFValue) throws -> [(key: String, value: GGUFValue)]? {
        let vocabPath = (folder as NSString).appendingPathComponent("vocab.txt")
        guard FileManager.default.fileExists(atPath: vocabPath) else { return nil }
        let text = try String(contentsOfFile: vocabPath, encoding: .utf8)
        var lines = text.components(separatedBy: "\n").map { $0.hasSuffix("\r") ? String($0.dropLast()) : $0 }
        if lines.last == "" { lines.removeLast() }
        let special = specialTokens(folder: folder)
        var tokens: [GGUFValue] = [], types: [GGUFValue] = []
        tokens.reserveCapacity(lines.count); types.reserveCapacity(lines.count)
        var ids: [String: Int] = [:]
        for (id, token) in lines.enumerated() {
            if ids[token] == nil { ids[token] = id }
            if special.contains(token) {
                tokens.append(.string(token)); types.append(.int32(TokenType.control.rawValue))
            } else {
                tokens.append(.string(token.hasPrefix("##") ? String(token.dropFirst(2)) : "\u{2581}" + token))
                types.append(.int32(TokenType.normal.rawValue))
            }
        }
        var meta: [(key: String, value: GGUFValue)] = [
            ("tokenizer.ggml.token_type_count", typeVocabularySize),
            ("tokenizer.ggml.model", .string("bert")),
            ("tokenizer.ggml.pre", .string("default")),
            ("tokenizer.ggml.tokens", .array(elementType: 8, values: tokens)),
            ("tokenizer.ggml.token_type", .array(elementType: 5, values: types)),
        ]
        // [CLS] opens and [SEP] closes every sequence (llama.cpp's "bos" and "sep" for WPM vocabularies).
        for (token, key) in [("[CLS]", "bos_token_id"), ("[SEP]", "seperator_token_id"), ("[UNK]", "unknown_token_id"),
                             ("[PAD]", "padding_token_id"), ("[MASK]", "mask_token_id")] {
            if let id = ids[token].flatMap({ UInt32(exactly: $0) }) { meta.append(("tokenizer.ggml.\(key)", .uint32(id))) }
        }
        meta += [("tokenizer.ggml.add_bos_token", .bool(true)), ("tokenizer.ggml.add_sep_token", .bool(true))]
        return meta
    }

    /// Special tokens: the added tokens `tokenizer.json` marks special, else the values of `special_tokens_map.json`.
    static func specialTokens(folder: String) -> Set<String> {
        func json(_ name: String) -> Any? {
            FileManager.default.contents(atPath: (folder as NSString).appendingPathComponent(name))
                .flatMap { try? JSONSerialization.jsonObject(with: $0) }
        }
        if let t = json("tokenizer.json") as? [String: Any], let added = t["added_tokens"] as? [[String: Any]] {
            let special = added.filter { ($0["special"] as? Bool) == true }.compactMap { $0["content"] as? String }
            if !special.isEmpty { return Set(special) }
        }
        if let m = json("special_tokens_map.json") as? [String: Any] {
            return Set(m.values.compactMap { v in (v as? String) ?? ((v as? [String: Any])?["content"] as? String) })
        }
        return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    }

    /// A placeholder SentencePiece ("llama") vocabulary for a model that ships no tokenizer (e.g. `weightmark
    /// synth` output): `<unk>`, `<s>`, `</s>`, the 256 byte tokens `<0x00>`…`<0xFF>`, then `[PAD…]` fillers up
    /// to the model's vocabulary size, as llama.cpp's converter pads a short vocabulary. Every text
    /// tokenizes to bytes, so llama.cpp can load and run the model; it is not the model's own tokenizer.
    /// - Returns: nil when the vocabulary is too small to hold the 259 base tokens.
    static func placeholderSentencePiece(vocabularySize n: Int) -> [(key: String, value: GGUFValue)]? {
        guard n >= 259 else { return nil }
        var tokens: [GGUFValue] = [.string("<unk>"), .string("<s>"), .string("</s>")]
        var types: [GGUFValue] = [.int32(TokenType.unknown.rawValue), .int32(TokenType.control.rawValue), .int32(TokenType.control.rawValue)]
        var scores: [GGUFValue] = [.float32(0), .float32(0), .float32(0)]
        for b in 0..<256 {
            tokens.append(.string(String(format: "<0x%02X>", b))); types.append(.int32(TokenType.byte.rawValue)); scores.append(.float32(0))
        }
        for i in 259..<n {
            tokens.append(.string("[PAD\(i)]")); types.append(.int32(TokenType.unused.rawValue)); scores.append(.float32(-1000))
        }
        return [
            ("tokenizer.ggml.model", .string("llama")),
            ("tokenizer.ggml.pre", .string("default")),
            ("tokenizer.ggml.tokens", .array(elementType: 8, values: tokens)),
            ("tokenizer.ggml.scores", .array(elementType: 6, values: scores)),
            ("tokenizer.ggml.token_type", .array(elementType: 5, values: types)),
            ("tokenizer.ggml.bos_token_id", .uint32(1)),
            ("tokenizer.ggml.eos_token_id", .uint32(2)),
            ("tokenizer.ggml.unknown_token_id", .uint32(0)),
            ("tokenizer.ggml.add_bos_token", .bool(true)),
            ("tokenizer.ggml.add_eos_token", .bool(false)),
        ]
    }
}

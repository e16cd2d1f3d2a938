/// Tensor naming and layout conventions between Hugging Face checkpoints and llama.cpp's GGUF files,
/// as llama.cpp's `convert_hf_to_gguf.py` applies them for BERT- and Llama-family models.
public enum GGUFArchitecture: String, Sendable {
    case bert, llama

    /// (Hugging Face pattern, GGUF pattern); `{N}` is the layer index.
    var nameMap: [(hf: String, gguf: String)] {
        switch self {
        case .bert:
            return [
                ("embeddings.word_embeddings.weight", "token_embd.weight"),
                ("embeddings.position_embeddings.weight", "position_embd.weight"),
                ("embeddings.token_type_embeddings.weight", "token_types.weight"),
                ("embeddings.LayerNorm.weight", "token_embd_norm.weight"),
                ("embeddings.LayerNorm.bias", "token_embd_norm.bias"),
                ("encoder.layer.{N}.attention.self.query.weight", "blk.{N}.attn_q.weight"),
                ("encoder.layer.{N}.attention.self.query.bias", "blk.{N}.attn_q.bias"),
                ("encoder.layer.{N}.attention.self.key.weight", "blk.{N}.attn_k.weight"),
                ("encoder.layer.{N}.attention.self.key.bias", "blk.{N}.attn_k.bias"),
                ("encoder.layer.{N}.attention.self.value.weight", "blk.{N}.attn_v.weight"),
                ("encoder.layer.{N}.attention.self.value.bias", "blk.{N}.attn_v.bias"),
                ("encoder.layer.{N}.attention.output.dense.weight", "blk.{N}.attn_output.weight"),
                ("encoder.layer.{N}.attention.output.dense.bias", "blk.{N}.attn_output.bias"),
                ("encoder.layer.{N}.attention.output.LayerNorm.weight", "blk.{N}.attn_output_norm.weight"),
                ("encoder.layer.{N}.attention.output.LayerNorm.bias", "blk.{N}.attn_output_norm.bias"),
                ("encoder.layer.{N}.intermediate.dense.weight", "blk.{N}.ffn_up.weight"),
                ("encoder.layer.{N}.intermediate.dense.bias", "blk.{N}.ffn_up.bias"),
                ("encoder.layer.{N}.output.dense.weight", "blk.{N}.ffn_down.weight"),
                ("encoder.layer.{N}.output.dense.bias", "blk.{N}.ffn_down.bias"),
                ("encoder.layer.{N}.output.LayerNorm.weight", "blk.{N}.layer_output_norm.weight"),
                ("encoder.layer.{N}.output.LayerNorm.bias", "blk.{N}.layer_output_norm.bias"),
            ]
        case .llama:
            return [
                ("model.embed_tokens.weight", "token_embd.weight"),
                ("model.norm.weight", "output_norm.weight"),
                ("lm_head.weight", "output.weight"),
                ("model.layers.{N}.input_layernorm.weight", "blk.{N}.attn_norm.weight"),
                ("model.layers.{N}.self_attn.q_proj.weight", "blk.{N}.attn_q.weight"),
                ("model.layers.{N}.self_attn.k_proj.weight", "blk.{N}.attn_k.weight"),
                ("model.layers.{N}.self_attn.v_proj.weight", "blk.{N}.attn_v.weight"),
                ("model.layers.{N}.self_attn.o_proj.weight", "blk.{N}.attn_output.weight"),
                ("model.layers.{N}.post_attention_layernorm.weight", "blk.{N}.ffn_norm.weight"),
                ("model.layers.{N}.mlp.gate_proj.weight", "blk.{N}.ffn_gate.weight"),
                ("model.layers.{N}.mlp.up_proj.weight", "blk.{N}.ffn_up.weight"),
                ("model.layers.{N}.mlp.down_proj.weight", "blk.{N}.ffn_down.weight"),
            ]
        }
    }

    static func match(_ name: String, _ pattern: String) -> String?? {
        guard let r = pattern.range(of: "{N}") else { return name == pattern ? .some(nil) : nil }
        let prefix = pattern[..<r.lowerBound], suffix = pattern[r.upperBound...]
        guard name.hasPrefix(prefix), name.hasSuffix(suffix), name.count > prefix.count + suffix.count else { return nil }
        let n = name.dropFirst(prefix.count).dropLast(suffix.count)
        return n.allSatisfy(\.isNumber) ? .some(String(n)) : nil
    }

    /// GGUF name of a Hugging Face tensor, nil if llama.cpp's converter drops it.
    public func ggufName(forHF name: String) -> String? {
        for (hf, gg) in nameMap {
            if let m = Self.match(name, hf) { return m.map { gg.replacingOccurrences(of: "{N}", with: $0) } ?? gg }
        }
        return nil
    }

    /// Hugging Face name of a GGUF tensor, nil if unknown.
    public func hfName(forGGUF name: String) -> String? {
        for (hf, gg) in nameMap {
            if let m = Self.match(name, gg) { return m.map { hf.replacingOccurrences(of: "{N}", with: $0) } ?? hf }
        }
        return nil
    }

    /// llama.cpp permutes q_proj and k_proj rows for its rotary layout: rows (h, 2, d/2) → (h, d/2, 2).
    /// Returns the row order: output row r holds input row `order[r]`.
    public static func rotaryRowOrder(rows: Int, heads: Int) -> [Int] {
        precondition(heads > 0 && rows % (2 * heads) == 0, "rows \(rows) do not split into \(heads) heads of even size")
        let dim = rows / heads, half = dim / 2
        var order = [Int](repeating: 0, count: rows)
        for h in 0..<heads { for i in 0..<half { for t in 0..<2 { order[h * dim + 2 * i + t] = h * dim + t * half + i } } }
        return order
    }

    /// Heads used to permute a tensor's rows (q: attention heads; k: key-value heads), nil if not permuted.
    public func rotaryHeads(forHF name: String, heads: Int, kvHeads: Int) -> Int? {
        guard self == .llama else { return nil }
        if name.hasSuffix("self_attn.q_proj.weight") { return heads }
        if name.hasSuffix("self_attn.k_proj.weight") { return kvHeads }
        return nil
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        guard let r = range(of: target) else { return self }
        return String(self[..<r.lowerBound]) + replacement + String(self[r.upperBound...])
    }

    fileprivate func range(of target: String) -> Range<String.Index>? {
        var i = startIndex
        while i < endIndex {
            if self[i...].hasPrefix(target) { return i..<index(i, offsetBy: target.count) }
            i = index(after: i)
        }
        return nil
    }
}

/// Reorders the rows of a row-major matrix: output row r = input row `order[r]`.
public func reorderRows(_ values: [Float], cols: Int, order: [Int]) -> [Float] {
    var out = [Float](repeating: 0, count: values.count)
    for (r, src) in order.enumerated() {
        out.replaceSubrange((r * cols)..<((r + 1) * cols), with: values[(src * cols)..<((src + 1) * cols)])
    }
    return out
}

/// The inverse of `reorderRows` with the same `order`.
public func restoreRows(_ values: [Float], cols: Int, order: [Int]) -> [Float] {
    var out = [Float](repeating: 0, count: values.count)
    for (r, src) in order.enumerated() {
        out.replaceSubrange((src * cols)..<((src + 1) * cols), with: values[(r * cols)..<((r + 1) * cols)])
    }
    return out
}

/// Readings a matrix's name announces. Frameworks name fused and re-ordered matrices by convention (`qkv_proj`,
/// `Wqkv`, GPT-2's `c_attn`, GPT-NeoX's `query_key_value`, `gate_up_proj`, Meta's `wq`/`wk`), so a name may steer
/// which hypothesis is chosen for it (docs/FORMAT.md §Detection, step 4). It never enters Z: a false or scrambled
/// name costs power at most, never the bound, and a renamed copy falls back to its pilots.
enum LayoutHints {
    /// The hypotheses among `candidates` (readings of a stored `rows`×`cols` matrix) that `name` announces, in the
    /// orientation `orientation` when it has any; empty when the name announces none. Digits play no part, so a name
    /// pattern (`layers.#.attention.wq.weight`) announces what each of its names does.
    static func readings(for name: String, among candidates: [TileHypothesis], rows: Int, cols: Int,
                         orientation: TileHypothesis.Orientation) -> [TileHypothesis] {
        let parts = name.lowercased().split(separator: ".").map(String.init)
        let interleavedQKV = parts.contains("query_key_value")
        let fusedQKV = interleavedQKV || parts.contains { $0 == "c_attn" || $0 == "in_proj_weight" || $0.contains("qkv") }
        let fusedGateUp = parts.contains { $0.contains("gate_up") }
        let metaRotary = parts.contains { $0 == "wq" || $0 == "wk" }
        func announced(_ h: TileHypothesis) -> Bool {
            let width = h.orientation == .stored ? cols : rows // the width of the matrix as read
            switch h.layout {
            // q is as wide as the input, so its block is square: [d, d, d], or [d, kv, kv] under grouped-query attention.
            case let .blocks(sizes): return (fusedQKV && sizes.count == 3 && sizes[0] == width) || (fusedGateUp && sizes.count == 2)
            case .interleaved: return interleavedQKV
            case .metaRotary: return metaRotary
            case .offset, .rowShift, .columnShift: return false
            }
        }
        var out = candidates.filter(announced)
        // GPT-NeoX and BLOOM interleave per head; a `query_key_value` that cannot be read so (Falcon's) is blocks.
        if out.contains(where: { if case .interleaved = $0.layout { true } else { false } }) {
            out.removeAll { if case .blocks = $0.layout { true } else { false } }
        }
        let oriented = out.filter { $0.orientation == orientation }
        return oriented.isEmpty ? out : oriented
    }

    /// The axis a tensor-parallel shard cuts a matrix of this name along, as Megatron-LM and Meta's checkpoints cut
    /// them: true (rows: output features) for the column-parallel q/k/v, gate/up, fused qkv and gate_up, BERT's
    /// query/key/value and intermediate, Meta's wq/wk/wv/w1/w3, fc1, embeddings and the LM head (vocabulary-parallel);
    /// false (columns: input features) for the row-parallel o/down, wo/w2, out_proj, fc2 and BERT's output denses;
    /// nil when the name says neither. Like `readings`, it only steers the choice of a reading.
    static func shardAxis(for name: String) -> Bool? {
        let parts = name.lowercased().split(separator: ".").map(String.init)
        let byColumns: Set<String> = ["o_proj", "down_proj", "wo", "w2", "out_proj", "fc2", "c_proj", "dense_4h_to_h"]
        let byRows: Set<String> = ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "qkv_proj", "gate_up_proj", "wq", "wk", "wv",
                                   "w1", "w3", "fc1", "c_fc", "query", "key", "value", "query_key_value", "wqkv", "dense_h_to_4h",
                                   "embed_tokens", "tok_embeddings", "word_embeddings", "wte", "lm_head", "output", "intermediate"]
        // BERT: attention.output.dense and output.dense are row-parallel, intermediate.dense column-parallel.
        if parts.contains("dense"), let i = parts.lastIndex(of: "dense"), i > 0 {
            if parts[i - 1] == "output" { return false }
            if parts[i - 1] == "intermediate" { return true }
        }
        if parts.contains(where: byColumns.contains) { return false }
        if parts.contains(where: byRows.contains) { return true }
        return nil
    }
}

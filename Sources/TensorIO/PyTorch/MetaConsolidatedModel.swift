import Foundation

/// Meta's original Llama layout seen as one Hugging Face model: a folder of model-parallel shards
/// `consolidated.00.pth … consolidated.(k−1).pth` plus `params.json`.
///
/// fairscale's model parallelism split ColumnParallelLinear weights (wq, wk, wv, w1, w3, output) along dim 0 and
/// RowParallelLinear / ParallelEmbedding weights (wo, w2, tok_embeddings) along dim 1; 1-D norms are replicated.
/// Shards are merged on the fly, names are mapped to Hugging Face's (`layers.N.attention.wq.weight` →
/// `model.layers.N.self_attn.q_proj.weight`, …) and the rows of wq and wk get the rotary permutation Hugging Face's
/// conversion applies: HF row `h·d + t·d/2 + i` is Meta row `h·d + 2i + t` (d = head dimension). `rope.freqs` is
/// dropped, as the conversion does.
/// Sendable: immutable after init: the shards (read-only mappings) and the merge plan are only read.
public final class MetaConsolidatedModel: RowBlockDecodable, StoredTensorSource, @unchecked Sendable {
    enum Split: Equatable { case rows, columns, replicated }

    struct Merged {
        var hfName: String
        var metaName: String
        var shape: [Int]
        var dtype: DType
        var split: Split
        /// First merged index (row or column) held by each shard along the split dimension.
        var starts: [Int]
        /// Heads for the rotary row permutation (wq: n_heads, wk: n_kv_heads), nil otherwise.
        var rotaryHeads: Int?
    }

    public let path: String
    public let shards: [PyTorchCheckpoint]
    public let heads: Int
    public let kvHeads: Int
    private let merged: [Merged]
    private let byName: [String: Int]

    /// Whether `path` is a folder with `params.json` and `consolidated.00.pth`.
    public static func isMetaFolder(_ path: String) -> Bool {
        let fm = FileManager.default
        return fm.fileExists(atPath: (path as NSString).appendingPathComponent("params.json"))
            && fm.fileExists(atPath: (path as NSString).appendingPathComponent("consolidated.00.pth"))
    }

    public init(path: String) throws {
        self.path = path
        let fm = FileManager.default
        let paramsPath = (path as NSString).appendingPathComponent("params.json")
        guard let data = fm.contents(atPath: paramsPath) else {
            throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "params.json is missing or unreadable")
        }
        let params: JSONValue
        do { params = try data.withUnsafeBytes { (b) throws(JSONSyntaxError) in try JSONParser.parse(b) } } catch let e as JSONSyntaxError {
            throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "params.json is not valid JSON at byte \(e.offset): \(e.reason)")
        }
        guard case let .object(members) = params else {
            throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "params.json is not an object")
        }
        func integer(_ key: String) -> Int? { members.first { $0.key == key }?.value.exactInteger }
        guard let h = integer("n_heads"), h > 0 else {
            throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "params.json has no positive n_heads")
        }
        heads = h
        kvHeads = integer("n_kv_heads") ?? h
        guard kvHeads > 0, h % kvHeads == 0 else {
            throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "n_kv_heads \(kvHeads) does not divide n_heads \(h)")
        }
        let entries = (try? fm.contentsOfDirectory(atPath: path)) ?? []
        let shardNames = entries.filter { $0.hasPrefix("consolidated.") && $0.hasSuffix(".pth") }.sorted()
        for (i, n) in shardNames.enumerated() where n != String(format: "consolidated.%02ld.pth", i) {
            throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "shard files must be consolidated.00.pth … consolidated.\(String(format: "%02ld", shardNames.count - 1)).pth without gaps; found \(n)")
        }
        shards = try shardNames.map { try PyTorchCheckpoint(path: (path as NSString).appendingPathComponent($0)) }
        guard let first = shards.first else {
            throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "no consolidated.NN.pth files")
        }
        var list: [Merged] = []
        var index: [String: Int] = [:]
        let names = Set(first.tensors.map(\.view.name))
        for s in shards.dropFirst() {
            let other = Set(s.tensors.map(\.view.name))
            if let extra = other.symmetricDifference(names).sorted().first {
                throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "tensor \"\(extra)\" is not in every shard")
            }
        }
        for t in first.tensors {
            let name = t.view.name
            if name == "rope.freqs" { continue }
            let parts = shards.map { $0.tensor(named: name)!.view }
            guard parts.allSatisfy({ $0.dtype == t.view.dtype && $0.shape.count == t.view.shape.count }) else {
                throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "tensor \"\(name)\" differs in type or rank between shards")
            }
            var split = Self.split(of: name, rank: t.view.shape.count)
            if shards.count == 1 { split = .replicated }
            var shape = t.view.shape
            var starts = [0]
            switch split {
            case .replicated:
                guard parts.allSatisfy({ $0.shape == t.view.shape }) else {
                    throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "replicated tensor \"\(name)\" has different shapes in different shards")
                }
            case .rows, .columns:
                let d = split == .rows ? 0 : 1
                var total = 0
                starts = []
                for p in parts {
                    guard p.shape[1 - d] == t.view.shape[1 - d] else {
                        throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "shards of \"\(name)\" disagree in dimension \(1 - d): \(p.shape) vs \(t.view.shape)")
                    }
                    starts.append(total)
                    let (sum, o) = total.addingReportingOverflow(p.shape[d])
                    guard !o else { throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "merged size of \"\(name)\" overflows") }
                    total = sum
                }
                shape[d] = total
            }
            let hf = Self.huggingFaceName(meta: name)
            var rotary: Int?
            if name.hasSuffix("attention.wq.weight") { rotary = heads }
            if name.hasSuffix("attention.wk.weight") { rotary = kvHeads }
            if let r = rotary, shape.count != 2 || shape[0] % (2 * r) != 0 {
                throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "\"\(name)\" has \(shape.first ?? 0) rows, which do not split into \(r) heads of even size (check n_heads / n_kv_heads in params.json)")
            }
            guard index.updateValue(list.count, forKey: hf) == nil else {
                throw TensorIOError.invalidMetaCheckpoint(path: path, reason: "two tensors map to \"\(hf)\"")
            }
            list.append(Merged(hfName: hf, metaName: name, shape: shape, dtype: t.view.dtype, split: split, starts: starts, rotaryHeads: rotary))
        }
        merged = list
        byName = index
    }

    /// How fairscale split a Meta tensor across model-parallel ranks.
    static func split(of name: String, rank: Int) -> Split {
        guard rank == 2 else { return .replicated }
        for s in ["attention.wq.weight", "attention.wk.weight", "attention.wv.weight", "feed_forward.w1.weight", "feed_forward.w3.weight"]
            where name.hasSuffix(s) { return .rows }
        if name == "output.weight" { return .rows }
        for s in ["attention.wo.weight", "feed_forward.w2.weight"] where name.hasSuffix(s) { return .columns }
        if name == "tok_embeddings.weight" { return .columns }
        return .replicated
    }

    /// Meta name → Hugging Face Llama name (unknown names pass through).
    public static func huggingFaceName(meta name: String) -> String {
        switch name {
        case "tok_embeddings.weight": return "model.embed_tokens.weight"
        case "norm.weight": return "model.norm.weight"
        case "output.weight": return "lm_head.weight"
        default: break
        }
        let parts = name.split(separator: ".", maxSplits: 2).map(String.init)
        guard parts.count == 3, parts[0] == "layers", Int(parts[1]) != nil else { return name }
        let table = [
            "attention.wq.weight": "self_attn.q_proj.weight", "attention.wk.weight": "self_attn.k_proj.weight",
            "attention.wv.weight": "self_attn.v_proj.weight", "attention.wo.weight": "self_attn.o_proj.weight",
            "feed_forward.w1.weight": "mlp.gate_proj.weight", "feed_forward.w2.weight": "mlp.down_proj.weight",
            "feed_forward.w3.weight": "mlp.up_proj.weight", "attention_norm.weight": "input_layernorm.weight",
            "ffn_norm.weight": "post_attention_layernorm.weight",
        ]
        guard let hf = table[parts[2]] else { return name }
        return "model.layers.\(parts[1]).\(hf)"
    }

    /// The Meta (stored) row of Hugging Face row `r` under the rotary permutation with `heads` heads.
    static func metaRow(ofHF r: Int, rows: Int, heads: Int) -> Int {
        let dim = rows / heads, half = dim / 2
        let h = r / dim, within = r % dim
        return h * dim + 2 * (within % half) + within / half
    }

    public var sourceTensors: [SourceTensor] { merged.map(source) }
    public func sourceTensor(named name: String) -> SourceTensor? { byName[name].map { source(merged[$0]) } }

    private func source(_ m: Merged) -> SourceTensor {
        SourceTensor(name: m.hfName, shape: m.shape, storage: m.dtype.rawValue, isFloating: m.dtype.isSupportedFloat)
    }

    private func lookup(_ name: String) throws -> Merged {
        guard let i = byName[name] else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        return merged[i]
    }

    /// Shard holding merged index `k` along the split dimension, and the local index there.
    private func locate(_ k: Int, in m: Merged) -> (shard: Int, local: Int) {
        var s = m.starts.count - 1
        while m.starts[s] > k { s -= 1 }
        return (s, k - m.starts[s])
    }

    public func decodeRows(named name: String, rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws {
        let m = try lookup(name)
        guard m.dtype.isSupportedFloat, m.shape.count == 2 else { throw TensorIOError.unsupportedDType(tensor: name, dtype: m.dtype) }
        let cols = m.shape[1]
        precondition(rows.lowerBound >= 0 && rows.upperBound <= m.shape[0] && out.count == rows.count * cols)
        switch m.split {
        case .replicated:
            try decodeMetaRows(m, shard: 0, rows: rows, into: out)
        case .rows:
            // Runs of consecutive stored rows within one shard are decoded with one call.
            var i = 0
            while i < rows.count {
                let r0 = rows.lowerBound + i
                let stored = m.rotaryHeads.map { Self.metaRow(ofHF: r0, rows: m.shape[0], heads: $0) } ?? r0
                let (s, local) = locate(stored, in: m)
                var run = 1
                if m.rotaryHeads == nil {
                    let shardEnd = s + 1 < m.starts.count ? m.starts[s + 1] : m.shape[0]
                    run = min(rows.count - i, shardEnd - stored)
                }
                try shards[s].decodeRows(named: m.metaName, rows: local..<(local + run),
                                         into: UnsafeMutableBufferPointer(rebasing: out[(i * cols)..<((i + run) * cols)]))
                i += run
            }
        case .columns:
            var scratch: [Float] = []
            for s in shards.indices {
                let width = (s + 1 < m.starts.count ? m.starts[s + 1] : cols) - m.starts[s]
                if scratch.count < rows.count * width { scratch = [Float](repeating: 0, count: rows.count * width) }
                try scratch.withUnsafeMutableBufferPointer { buf in
                    try shards[s].decodeRows(named: m.metaName, rows: rows, into: UnsafeMutableBufferPointer(rebasing: buf[0..<(rows.count * width)]))
                    for r in 0..<rows.count {
                        let dst = out.baseAddress! + r * cols + m.starts[s]
                        dst.update(from: buf.baseAddress! + r * width, count: width)
                    }
                }
            }
        }
    }

    private func decodeMetaRows(_ m: Merged, shard: Int, rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws {
        guard let heads = m.rotaryHeads else {
            try shards[shard].decodeRows(named: m.metaName, rows: rows, into: out)
            return
        }
        let cols = m.shape[1]
        for (i, r) in rows.enumerated() {
            let stored = Self.metaRow(ofHF: r, rows: m.shape[0], heads: heads)
            try shards[shard].decodeRows(named: m.metaName, rows: stored..<(stored + 1),
                                         into: UnsafeMutableBufferPointer(rebasing: out[(i * cols)..<((i + 1) * cols)]))
        }
    }

    public func decodeFloats(named name: String) throws -> [Float] {
        let m = try lookup(name)
        guard m.dtype.isSupportedFloat else { throw TensorIOError.unsupportedDType(tensor: name, dtype: m.dtype) }
        guard m.shape.count == 2 else { return try shards[0].decodeFloats(named: m.metaName) }
        var out = [Float](repeating: 0, count: m.shape[0] * m.shape[1])
        try out.withUnsafeMutableBufferPointer { try decodeRows(named: name, rows: 0..<m.shape[0], into: $0) }
        return out
    }

    public func releaseTensor(named name: String) {
        guard let m = try? lookup(name) else { return }
        for s in shards { s.releaseTensor(named: m.metaName) }
    }

    public func storedDType(named name: String) -> DType? { byName[name].map { merged[$0].dtype } }

    public func rowMajorBytes(named name: String) throws -> [UInt8] {
        let m = try lookup(name)
        guard m.shape.count == 2 else { return try shards[0].rowMajorBytes(named: m.metaName) }
        let w = m.dtype.bitCount / 8, rows = m.shape[0], cols = m.shape[1]
        let parts = try (m.split == .replicated ? [shards[0]] : shards).map { try $0.rowMajorBytes(named: m.metaName) }
        var out = [UInt8](repeating: 0, count: rows * cols * w)
        for r in 0..<rows {
            let stored = m.rotaryHeads.map { Self.metaRow(ofHF: r, rows: rows, heads: $0) } ?? r
            switch m.split {
            case .replicated:
                out.replaceSubrange((r * cols * w)..<((r + 1) * cols * w), with: parts[0][(stored * cols * w)..<((stored + 1) * cols * w)])
            case .rows:
                let (s, local) = locate(stored, in: m)
                out.replaceSubrange((r * cols * w)..<((r + 1) * cols * w), with: parts[s][(local * cols * w)..<((local + 1) * cols * w)])
            case .columns:
                for s in parts.indices {
                    let width = (s + 1 < m.starts.count ? m.starts[s + 1] : cols) - m.starts[s]
                    let dst = (r * cols + m.starts[s]) * w
                    out.replaceSubrange(dst..<(dst + width * w), with: parts[s][(r * width * w)..<((r + 1) * width * w)])
                }
            }
        }
        return out
    }
}

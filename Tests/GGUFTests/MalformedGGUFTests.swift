import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// Builds GGUF bytes field by field so each test can break exactly one rule.
struct GGUFBuilder {
    var bytes: [UInt8] = []
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func str(_ s: String) { u64(UInt64(s.utf8.count)); bytes += Array(s.utf8) }
    mutating func header(version: UInt32 = 3, tensors: UInt64, kvs: UInt64) { bytes += Array("GGUF".utf8); u32(version); u64(tensors); u64(kvs) }
    mutating func kvU32(_ k: String, _ v: UInt32) { str(k); u32(4); u32(v) }
    mutating func kvU64(_ k: String, _ v: UInt64, type: UInt32 = 10) { str(k); u32(type); u64(v) }
    mutating func kvString(_ k: String, _ v: String) { str(k); u32(8); str(v) }
    mutating func kvStrings(_ k: String, _ v: [String]) { str(k); u32(9); u32(8); u64(UInt64(v.count)); for s in v { str(s) } }
    mutating func tensor(_ name: String, ne: [UInt64], type: UInt32, offset: UInt64) {
        str(name); u32(UInt32(ne.count)); for d in ne { u64(d) }; u32(type); u64(offset)
    }
    mutating func pad(_ a: Int = 32) { bytes += [UInt8](repeating: 0, count: (a - bytes.count % a) % a) }
    mutating func data(_ n: Int) { bytes += [UInt8](repeating: 0, count: n) }

    /// A valid file: two F32 tensors of 8 and 4 elements (the second at offset 32).
    static func valid() -> [UInt8] {
        var b = GGUFBuilder()
        b.header(tensors: 2, kvs: 1)
        b.kvU32("general.alignment", 32)
        b.tensor("a", ne: [8], type: 0, offset: 0)
        b.tensor("b", ne: [4], type: 0, offset: 32)
        b.pad(); b.data(32); b.data(16)
        return b.bytes
    }

    /// A valid file with `tensors` (name, ne, ggml type id) laid out back to back at 32-byte alignment after
    /// `metadata`, their blocks filled with a fixed byte pattern (so dequantization sees varied values).
    static func file(metadata: (inout GGUFBuilder) -> Void = { _ in }, kvs: UInt64 = 0,
                     tensors: [(name: String, ne: [UInt64], type: UInt32)]) -> [UInt8] {
        var b = GGUFBuilder()
        b.header(tensors: UInt64(tensors.count), kvs: kvs)
        metadata(&b)
        var offset: UInt64 = 0
        var sizes: [Int] = []
        for t in tensors {
            let (qk, size) = GGMLType(rawValue: t.type)!.blockLayout
            let bytes = Int(t.ne.reduce(1, *)) / qk * size
            b.tensor(t.name, ne: t.ne, type: t.type, offset: offset)
            offset += UInt64((bytes + 31) / 32 * 32)
            sizes.append(bytes)
        }
        b.pad()
        for n in sizes {
            b.bytes += (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 73 &+ 41) }
            b.pad()
        }
        return b.bytes
    }

    /// One tensor (one block) of each type the codec dequantized when the seed corpus was made: F32, F16, BF16,
    /// Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and Q2_K to Q6_K. A fixed list, so the committed seed stays put.
    static func allDecodableTypes() -> [UInt8] {
        file(tensors: ([0, 1, 30, 8, 2, 3, 6, 7, 10, 11, 12, 13, 14] as [UInt32]).map { id in
            let qk = GGMLType(rawValue: id)!.blockLayout.elements
            return ("t\(id)", [UInt64(qk == 1 ? 8 : qk)], id)
        })
    }

    /// A Llama-architecture file whose q and k projections go through the rotary row restoration.
    static func llama(headCount: UInt64 = 2, headCountType: UInt32 = 4) -> [UInt8] {
        file(metadata: { b in
            b.kvString("general.architecture", "llama")
            b.str("llama.attention.head_count"); b.u32(headCountType)
            if headCountType == 4 { b.u32(UInt32(headCount)) } else { b.u64(headCount) }
            b.kvU32("llama.attention.head_count_kv", 1)
            b.kvStrings("tokenizer.ggml.tokens", ["<s>", "</s>", "a"])
        }, kvs: 4, tensors: [
            ("blk.0.attn_q.weight", [4, 8], 0), ("blk.0.attn_k.weight", [4, 4], 0),
            ("token_embd.weight", [32, 2], 8), ("output_norm.weight", [4], 1),
        ])
    }

    /// A BERT-architecture file (names mapped back, no row permutation).
    static func bert() -> [UInt8] {
        file(metadata: { $0.kvString("general.architecture", "bert"); $0.kvU32("general.alignment", 32) }, kvs: 2, tensors: [
            ("token_embd.weight", [4, 2], 0), ("blk.0.attn_q.weight", [8, 2], 1), ("blk.0.ffn_up.weight", [256], 12),
        ])
    }
}

struct MalformedGGUF: CustomTestStringConvertible, Sendable {
    var name: String
    var bytes: [UInt8]
    var expected: @Sendable (GGUFFormatError) -> Bool
    var testDescription: String { name }
}

private func build(_ body: (inout GGUFBuilder) -> Void) -> [UInt8] { var b = GGUFBuilder(); body(&b); return b.bytes }

private let malformed: [MalformedGGUF] = [
    MalformedGGUF(name: "bad magic", bytes: Array("GGML".utf8) + [UInt8](repeating: 0, count: 40)) { if case .badMagic = $0 { true } else { false } },
    MalformedGGUF(name: "empty file", bytes: []) { if case .truncated(offset: 0, _, _) = $0 { true } else { false } },
    MalformedGGUF(name: "unsupported version 1", bytes: build { $0.header(version: 1, tensors: 0, kvs: 0) }) { $0 == .unsupportedVersion(1) },
    MalformedGGUF(name: "truncated KV", bytes: build { $0.header(tensors: 0, kvs: 1); $0.str("general.alignment"); $0.u32(4) }) {
        if case .truncated(_, _, "a u32 value") = $0 { true } else { false }
    },
    MalformedGGUF(name: "string longer than file", bytes: build { $0.header(tensors: 0, kvs: 1); $0.u64(1 << 40) }) {
        if case .stringTooLong(offset: 24, length: 1 << 40) = $0 { true } else { false }
    },
    MalformedGGUF(name: "unknown value type", bytes: build { $0.header(tensors: 0, kvs: 1); $0.str("k"); $0.u32(99) }) {
        if case .unknownValueType(_, 99) = $0 { true } else { false }
    },
    MalformedGGUF(name: "array count beyond file", bytes: build { $0.header(tensors: 0, kvs: 1); $0.str("k"); $0.u32(9); $0.u32(4); $0.u64(1 << 50) }) {
        if case .countTooLarge(what: "array element", _, _) = $0 { true } else { false }
    },
    MalformedGGUF(name: "duplicate key", bytes: build { $0.header(tensors: 0, kvs: 2); $0.kvU32("x", 1); $0.kvU32("x", 2) }) {
        if case .duplicateKey("x", _) = $0 { true } else { false }
    },
    MalformedGGUF(name: "alignment not a power of two", bytes: build { $0.header(tensors: 0, kvs: 1); $0.kvU32("general.alignment", 24) }) {
        $0 == .invalidAlignment(24)
    },
    MalformedGGUF(name: "offset gap", bytes: build { b in
        b.header(tensors: 2, kvs: 0); b.tensor("a", ne: [8], type: 0, offset: 0); b.tensor("b", ne: [4], type: 0, offset: 64); b.pad(); b.data(96)
    }) { if case .unexpectedOffset(tensor: "b", offset: 64, expected: 32) = $0 { true } else { false } },
    MalformedGGUF(name: "offset overlap", bytes: build { b in
        b.header(tensors: 2, kvs: 0); b.tensor("a", ne: [16], type: 0, offset: 0); b.tensor("b", ne: [4], type: 0, offset: 32); b.pad(); b.data(96)
    }) { if case .unexpectedOffset(tensor: "b", offset: 32, expected: 64) = $0 { true } else { false } },
    MalformedGGUF(name: "misaligned offset", bytes: build { b in
        b.header(tensors: 1, kvs: 0); b.tensor("a", ne: [8], type: 0, offset: 4); b.pad(); b.data(64)
    }) { if case .misalignedOffset(tensor: "a", offset: 4, alignment: 32) = $0 { true } else { false } },
    MalformedGGUF(name: "ne[0] not a multiple of the block", bytes: build { b in
        b.header(tensors: 1, kvs: 0); b.tensor("q", ne: [30, 2], type: 8, offset: 0); b.pad(); b.data(128)
    }) { if case .rowNotMultipleOfBlock(tensor: "q", ne0: 30, block: 32, type: "Q8_0") = $0 { true } else { false } },
    MalformedGGUF(name: "duplicate tensor name", bytes: build { b in
        b.header(tensors: 2, kvs: 0); b.tensor("a", ne: [8], type: 0, offset: 0); b.tensor("a", ne: [8], type: 0, offset: 32); b.pad(); b.data(64)
    }) { if case .duplicateTensor("a", _) = $0 { true } else { false } },
    MalformedGGUF(name: "more than 4 dimensions", bytes: build { b in
        b.header(tensors: 1, kvs: 0); b.tensor("a", ne: [1, 1, 1, 1, 8], type: 0, offset: 0); b.pad(); b.data(32)
    }) { if case .tooManyDimensions(tensor: "a", dimensions: 5, _) = $0 { true } else { false } },
    MalformedGGUF(name: "overflowing element count", bytes: build { b in
        b.header(tensors: 1, kvs: 0); b.tensor("a", ne: [1 << 32, 1 << 32, 1 << 32], type: 0, offset: 0); b.pad(); b.data(32)
    }) { $0 == .sizeOverflow(tensor: "a") },
    MalformedGGUF(name: "data beyond the file", bytes: build { b in
        b.header(tensors: 1, kvs: 0); b.tensor("a", ne: [64], type: 0, offset: 0); b.pad(); b.data(100)
    }) { if case .dataBeyondFile(tensor: "a", _, _) = $0 { true } else { false } },
    MalformedGGUF(name: "name of 64 bytes", bytes: build { b in
        b.header(tensors: 1, kvs: 0); b.tensor(String(repeating: "n", count: 64), ne: [8], type: 0, offset: 0); b.pad(); b.data(32)
    }) { if case .nameTooLong = $0 { true } else { false } },
    MalformedGGUF(name: "tensor count beyond file", bytes: build { $0.header(tensors: 1 << 40, kvs: 0) }) {
        if case .countTooLarge(what: "tensor", _, _) = $0 { true } else { false }
    },
    // Regression: offsets near 2^62 and 2^63 (each equal to the previous tensor's end) trapped on Int conversion.
    MalformedGGUF(name: "tensor offsets near 2^62 and 2^63", bytes: build { b in
        b.header(tensors: 3, kvs: 0)
        b.tensor("a", ne: [1 << 60], type: 0, offset: 0)
        b.tensor("b", ne: [1 << 60], type: 0, offset: 1 << 62)
        b.tensor("c", ne: [8], type: 0, offset: 1 << 63)
        b.pad(); b.data(64)
    }) { if case .dataBeyondFile(tensor: "a", end: _?, fileSize: 192) = $0 { true } else { false } },
    // Regression: a data end just below 2^64 overflowed when rounded up to the alignment.
    MalformedGGUF(name: "data end rounds up past 2^64", bytes: build { b in
        b.header(tensors: 3, kvs: 0)
        b.tensor("a", ne: [(1 << 61) - 8], type: 0, offset: 0)
        b.tensor("b", ne: [(1 << 61) - 8], type: 0, offset: (1 << 63) - 32)
        b.tensor("c", ne: [9], type: 0, offset: UInt64.max - 63)
        b.pad(); b.data(64)
    }) { $0 == .sizeOverflow(tensor: "c") },
    MalformedGGUF(name: "data end just below 2^64", bytes: build { b in
        b.header(tensors: 3, kvs: 0)
        b.tensor("a", ne: [(1 << 61) - 8], type: 0, offset: 0)
        b.tensor("b", ne: [(1 << 61) - 8], type: 0, offset: (1 << 63) - 32)
        b.tensor("c", ne: [8], type: 0, offset: UInt64.max - 63)
        b.pad(); b.data(64)
    }) { if case .dataBeyondFile(tensor: "a", _, _) = $0 { true } else { false } },
    MalformedGGUF(name: "alignment 2^62", bytes: build { b in
        b.header(tensors: 3, kvs: 1); b.kvU64("general.alignment", 1 << 62)
        b.tensor("a", ne: [8], type: 0, offset: 0)
        b.tensor("b", ne: [1 << 60], type: 0, offset: 1 << 62)
        b.tensor("c", ne: [8], type: 0, offset: 1 << 63)
        b.data(64)
    }) { if case .dataBeyondFile(tensor: "a", _, _) = $0 { true } else { false } },
    MalformedGGUF(name: "dimension of 2^63", bytes: build { b in
        b.header(tensors: 1, kvs: 0); b.tensor("a", ne: [1 << 63], type: 0, offset: 0); b.pad(); b.data(32)
    }) { if case .invalidDimension(tensor: "a", _) = $0 { true } else { false } },
    MalformedGGUF(name: "array of u64 longer than the file", bytes: build { b in
        b.header(tensors: 0, kvs: 1); b.str("k"); b.u32(9); b.u32(10); b.u64(8); b.data(40)
    }) { if case .countTooLarge(what: "array element", count: 8, _) = $0 { true } else { false } },
    MalformedGGUF(name: "array count times element size past 2^64", bytes: build { b in
        b.header(tensors: 0, kvs: 1); b.str("k"); b.u32(9); b.u32(9); b.u64(UInt64.max / 6); b.data(40)
    }) { if case .countTooLarge(what: "array element", _, _) = $0 { true } else { false } },
    MalformedGGUF(name: "array of unknown element type", bytes: build { b in
        b.header(tensors: 0, kvs: 1); b.str("k"); b.u32(9); b.u32(13); b.u64(0)
    }) { if case .unknownValueType(offset: 37, type: 13) = $0 { true } else { false } },
    // Regression, found by the GGUF fuzz target run against the parser before the fix: a tensor whose data
    // would end at 2^63 + 252 overflowed Int when its end was checked against the file size.
    MalformedGGUF(name: "fuzz finding data end past 2^63", bytes: Fixtures.bytes(fromHex: [
        "474755460300000002000000000000000200000000000000140000000000000067656e6572616c2e6172636869746563747572650800000004000000",
        "0000000062657274110000000000000067656e6572616c2e616c69676e6d656e7404000000200000001100000000000000746f6b656e5f656d62642e",
        "77656967687402000000040000000000000002000000000000000000000000000000000000001300000000000000626c6b2e352e6174746e5f712e77",
        "656967687402000000ffffffffffffff1f0200000000000000010000002000000000000000130000000000626c6b2e302e66666e5f75702e77226967",
        "687401000000000000000000ececec006264ffffff006768740200000004000000000000000200000000000000000000626c6b2e302e612e77656967",
        "6874",
    ].joined())) { $0 == .dataBeyondFile(tensor: "blk.5.attn_q.weight", end: 9_223_372_036_854_776_060, fileSize: 302) },
    MalformedGGUF(name: "KV count beyond file", bytes: build { $0.header(tensors: 0, kvs: 1 << 62) }) {
        if case .countTooLarge(what: "metadata", _, _) = $0 { true } else { false }
    },
    MalformedGGUF(name: "negative alignment", bytes: build { b in
        b.header(tensors: 0, kvs: 1); b.kvU64("general.alignment", UInt64(bitPattern: -32), type: 11)
    }) { if case .invalidAlignment = $0 { true } else { false } },
]

/// Regression (found by the GGUF fuzz target): `output_norm.weight` maps to the Hugging Face name
/// `model.norm.weight`, which a second tensor carries literally; `detect` took one's shape and the other's values
/// and trapped (exit 132) on a large pair.
private let duplicateHuggingFaceName = GGUFBuilder.file(metadata: { $0.kvString("general.architecture", "llama") }, kvs: 1,
                                                        tensors: [("output_norm.weight", [4], 0), ("model.norm.weight", [8], 0)])

/// Valid files that seed the GGUF fuzz target (with every malformed case above).
private let validSeeds: [(name: String, bytes: [UInt8])] = [
    ("valid two F32 tensors", GGUFBuilder.valid()),
    ("valid every decodable type", GGUFBuilder.allDecodableTypes()),
    ("valid llama with rotary rows", GGUFBuilder.llama()),
    ("valid bert", GGUFBuilder.bert()),
]

@Suite("Malformed GGUF files")
struct MalformedGGUFTests {
    @Test("each malformed file gives its specific error, naming the file", arguments: malformed)
    func rejects(_ c: MalformedGGUF) throws {
        let dir = Fixtures.temporaryDirectory("badgguf")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/bad.gguf"
        Fixtures.write(c.bytes, to: path)
        let result = Result { try GGUFFile(path: path) }
        guard case let .failure(error) = result else { Issue.record("\(c.name): accepted"); return }
        guard let e = error as? TensorIOError, case let .invalidGGUF(p, reason) = e else {
            Issue.record("\(c.name): unexpected \(error)"); return
        }
        #expect(p == path)
        #expect(c.expected(reason), "\(c.name): got \(reason)")
        #expect(e.description.contains(path))
    }

    @Test("the seed files of the GGUF fuzz target are exactly these malformed cases and valid files")
    func fuzzSeeds() {
        let seeds = malformed.map { ($0.name, $0.bytes) } + [("duplicate hugging face name", duplicateHuggingFaceName)] + validSeeds
        let problems = FuzzSeeds.mismatches(target: "GGUFParser", seeds: seeds)
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n")); regenerate with \(FuzzSeeds.writeVariable)=1 swift test --filter MalformedGGUFTests")
    }

    @Test("the valid seed files parse and every tensor dequantizes, through Hugging Face names")
    func validSeedsDecode() throws {
        let dir = Fixtures.temporaryDirectory("ggufseeds")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (name, bytes) in validSeeds {
            let path = dir + "/\(FuzzSeeds.fileName(name)).gguf"
            Fixtures.write(bytes, to: path)
            let model = try GGUFModel(path: path)
            #expect(!model.sourceTensors.isEmpty, "\(name)")
            for t in model.sourceTensors {
                #expect(t.isFloating, "\(name): \(t.name)")
                #expect(try model.decodeFloats(named: t.name).count == t.shape.reduce(1, *), "\(name): \(t.name)")
            }
        }
        let llama = try GGUFModel(path: dir + "/valid-llama-with-rotary-rows.gguf")
        #expect(llama.heads == 2)
        #expect(llama.sourceTensor(named: "model.layers.0.self_attn.q_proj.weight")?.shape == [8, 4])
        // The stored q rows are permuted for rotary embedding; reading them back restores the HF order.
        let stored = try llama.file.floats(of: try #require(llama.file.tensor(named: "blk.0.attn_q.weight")))
        let restored = try llama.decodeFloats(named: "model.layers.0.self_attn.q_proj.weight")
        let expected = restoreRows(stored, cols: 4, order: GGUFArchitecture.rotaryRowOrder(rows: 8, heads: 2))
        #expect(restored.map(\.bitPattern) == expected.map(\.bitPattern))
        #expect(restored.map(\.bitPattern) != stored.map(\.bitPattern))
    }

    // Regression: the rotary restoration computed 2 × head_count, which trapped for a head count near 2^62.
    @Test("a head count near 2^62 leaves q rows as stored instead of trapping", arguments: [UInt64(1) << 62, UInt64(Int64.max)])
    func hugeHeadCount(_ heads: UInt64) throws {
        let dir = Fixtures.temporaryDirectory("ggufheads")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        Fixtures.write(GGUFBuilder.llama(headCount: heads, headCountType: 11), to: dir + "/m.gguf")
        let model = try GGUFModel(path: dir + "/m.gguf")
        #expect(model.heads == Int(heads))
        let stored = try model.file.floats(of: try #require(model.file.tensor(named: "blk.0.attn_q.weight")))
        #expect(try model.decodeFloats(named: "model.layers.0.self_attn.q_proj.weight").map(\.bitPattern) == stored.map(\.bitPattern))
    }

    // Regression (found by the GGUF fuzz target): a q projection with no columns but 2^50 rows holds no data,
    // yet the rotary restoration allocated a 2^50-entry row order and died.
    @Test("an empty q projection with 2^50 rows decodes to no values")
    func emptyRotaryTensor() throws {
        let dir = Fixtures.temporaryDirectory("ggufempty")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        Fixtures.write(GGUFBuilder.file(metadata: { b in
            b.kvString("general.architecture", "llama"); b.kvU32("llama.attention.head_count", 2)
        }, kvs: 2, tensors: [("blk.0.attn_q.weight", [0, 1 << 50], 0)]), to: dir + "/m.gguf")
        let model = try GGUFModel(path: dir + "/m.gguf")
        #expect(model.sourceTensor(named: "model.layers.0.self_attn.q_proj.weight")?.shape == [1 << 50, 0])
        #expect(try model.decodeFloats(named: "model.layers.0.self_attn.q_proj.weight").isEmpty)
    }

    @Test("two tensors that map to one Hugging Face name are rejected, naming both and the file")
    func duplicateHFName() throws {
        let dir = Fixtures.temporaryDirectory("ggufdup")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/dup.gguf"
        Fixtures.write(duplicateHuggingFaceName, to: path)
        #expect(try GGUFFile(path: path).tensors.count == 2)
        do {
            _ = try GGUFModel(path: path)
            Issue.record("accepted")
        } catch let e as TensorIOError {
            guard case let .invalidGGUF(p, reason) = e else { Issue.record("unexpected \(e)"); return }
            #expect(p == path)
            #expect(reason == .duplicateHuggingFaceName("model.norm.weight", first: "output_norm.weight", second: "model.norm.weight"))
            #expect(e.description.contains(path) && e.description.contains("\"output_norm.weight\" and \"model.norm.weight\""))
        }
    }

    @Test("the valid baseline parses, and version 2 is accepted")
    func valid() throws {
        let dir = Fixtures.temporaryDirectory("goodgguf")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        Fixtures.write(GGUFBuilder.valid(), to: dir + "/ok.gguf")
        let f = try GGUFFile(path: dir + "/ok.gguf")
        #expect(f.tensors.map(\.name) == ["a", "b"])
        #expect(f.alignment == 32)
        var v2 = GGUFBuilder.valid()
        v2[4] = 2
        Fixtures.write(v2, to: dir + "/v2.gguf")
        #expect(try GGUFFile(path: dir + "/v2.gguf").version == 2)
    }
}

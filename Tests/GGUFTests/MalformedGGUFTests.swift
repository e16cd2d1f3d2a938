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

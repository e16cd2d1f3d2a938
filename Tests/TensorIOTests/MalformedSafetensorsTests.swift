import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// One case per rejection rule of the reference reader (and a few of WeightMark's own).
struct MalformedCase: CustomTestStringConvertible, Sendable {
    var name: String
    var bytes: [UInt8]
    var expected: @Sendable (SafetensorsFormatError) -> Bool
    var testDescription: String { name }
}

private let f32x2 = "\"dtype\":\"F32\",\"shape\":[2]"
private let eightBytes = [UInt8](repeating: 0, count: 8)

private let malformedCases: [MalformedCase] = [
    MalformedCase(name: "empty file", bytes: []) { if case .fileTooSmall(0) = $0 { true } else { false } },
    MalformedCase(name: "truncated length prefix", bytes: [1, 0, 0]) { if case .fileTooSmall(3) = $0 { true } else { false } },
    MalformedCase(name: "header larger than 100 MB",
                  bytes: Fixtures.rawSafetensors(header: "{}", data: [], declaredLength: 100_000_001)) {
        if case .headerTooLarge(100_000_001) = $0 { true } else { false }
    },
    MalformedCase(name: "header length beyond file",
                  bytes: Fixtures.rawSafetensors(header: "{}", data: [], declaredLength: 50)) {
        if case .headerBeyondFile(50, 10) = $0 { true } else { false }
    },
    MalformedCase(name: "header length near UInt64.max",
                  bytes: Fixtures.rawSafetensors(header: "{}", data: [], declaredLength: .max)) {
        if case .headerTooLarge = $0 { true } else { false }
    },
    MalformedCase(name: "invalid UTF-8", bytes: Fixtures.rawSafetensors(headerBytes: Array("{\"a".utf8) + [0xFF] + Array("\":{}}".utf8), data: [])) {
        if case .invalidUTF8(11) = $0 { true } else { false }
    },
    MalformedCase(name: "UTF-8 byte-order mark", bytes: Fixtures.rawSafetensors(headerBytes: [0xEF, 0xBB, 0xBF] + Array("{}".utf8), data: [])) {
        $0 == .byteOrderMark
    },
    MalformedCase(name: "invalid JSON", bytes: Fixtures.rawSafetensors(header: "{\"a\":", data: [])) {
        if case .invalidJSON(offset: 13, _) = $0 { true } else { false }
    },
    MalformedCase(name: "trailing garbage after JSON", bytes: Fixtures.rawSafetensors(header: "{} x", data: [])) {
        if case .invalidJSON = $0 { true } else { false }
    },
    MalformedCase(name: "header is an array", bytes: Fixtures.rawSafetensors(header: "[]", data: [])) { $0 == .headerNotObject },
    MalformedCase(name: "float used as integer (2.0)",
                  bytes: Fixtures.rawSafetensors(header: "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", data: eightBytes)) {
        $0 == .nonIntegerNumber(tensor: "w", field: "shape", text: "2.0")
    },
    MalformedCase(name: "negative zero used as integer",
                  bytes: Fixtures.rawSafetensors(header: "{\"w\":{\(f32x2),\"data_offsets\":[-0,8]}}", data: eightBytes)) {
        if case .nonIntegerNumber(tensor: "w", field: "data_offsets", _) = $0 { true } else { false }
    },
    MalformedCase(name: "exponent used as integer (2.4e1)",
                  bytes: Fixtures.rawSafetensors(header: "{\"w\":{\"dtype\":\"U8\",\"shape\":[2.4e1],\"data_offsets\":[0,24]}}", data: [UInt8](repeating: 0, count: 24))) {
        $0 == .nonIntegerNumber(tensor: "w", field: "shape", text: "2.4e1")
    },
    MalformedCase(name: "unknown dtype",
                  bytes: Fixtures.rawSafetensors(header: "{\"w\":{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,8]}}", data: eightBytes)) {
        $0 == .unknownDType(tensor: "w", dtype: "F128")
    },
    MalformedCase(name: "missing data_offsets",
                  bytes: Fixtures.rawSafetensors(header: "{\"w\":{\(f32x2)}}", data: eightBytes)) {
        if case .invalidTensorEntry(tensor: "w", _) = $0 { true } else { false }
    },
    MalformedCase(name: "non-string metadata value",
                  bytes: Fixtures.rawSafetensors(header: "{\"__metadata__\":{\"a\":1}}", data: [])) {
        if case .invalidMetadata = $0 { true } else { false }
    },
    MalformedCase(name: "duplicate tensor name",
                  bytes: Fixtures.rawSafetensors(header: "{\"w\":{\(f32x2),\"data_offsets\":[0,8]},\"w\":{\(f32x2),\"data_offsets\":[8,16]}}", data: eightBytes + eightBytes)) {
        if case .duplicateKey("w", _) = $0 { true } else { false }
    },
    MalformedCase(name: "hole between tensors",
                  bytes: Fixtures.rawSafetensors(header: "{\"a\":{\(f32x2),\"data_offsets\":[0,8]},\"b\":{\(f32x2),\"data_offsets\":[12,20]}}", data: [UInt8](repeating: 0, count: 20))) {
        if case .invalidOffsets(tensor: "b", begin: 12, end: 20, expectedBegin: 8, _) = $0 { true } else { false }
    },
    MalformedCase(name: "overlapping tensors",
                  bytes: Fixtures.rawSafetensors(header: "{\"a\":{\(f32x2),\"data_offsets\":[0,8]},\"b\":{\(f32x2),\"data_offsets\":[4,12]}}", data: [UInt8](repeating: 0, count: 12))) {
        if case .invalidOffsets(tensor: "b", begin: 4, end: 12, expectedBegin: 8, _) = $0 { true } else { false }
    },
    MalformedCase(name: "aliasing tensors (same bytes)",
                  bytes: Fixtures.rawSafetensors(header: "{\"a\":{\(f32x2),\"data_offsets\":[0,8]},\"b\":{\(f32x2),\"data_offsets\":[0,8]}}", data: eightBytes)) {
        if case .invalidOffsets(_, begin: 0, end: 8, expectedBegin: 8, _) = $0 { true } else { false }
    },
    MalformedCase(name: "zero-length data for a two-element tensor (size mismatch)",
                  bytes: Fixtures.rawSafetensors(header: "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},\"b\":{\(f32x2),\"data_offsets\":[0,0]}}", data: [])) {
        if case .sizeMismatch(tensor: "b", expected: 8, actual: 0, _) = $0 { true } else { false }
    },
    // Begins exactly where the previous tensor ends (no hole, no overlap), so only end < begin is wrong; and
    // end − begin = −8 would pass a check of |end − begin| against the 8 bytes of two F32 values.
    MalformedCase(name: "end before begin",
                  bytes: Fixtures.rawSafetensors(header: "{\"a\":{\(f32x2),\"data_offsets\":[0,8]},\"b\":{\(f32x2),\"data_offsets\":[8,0]}}", data: eightBytes)) {
        guard case .invalidOffsets(tensor: "b", begin: 8, end: 0, expectedBegin: 8, _) = $0 else { return false }
        return $0.description.contains("end before they begin")
    },
    MalformedCase(name: "inverted offsets",
                  bytes: Fixtures.rawSafetensors(header: "{\"a\":{\(f32x2),\"data_offsets\":[0,8]},\"b\":{\(f32x2),\"data_offsets\":[8,4]}}", data: eightBytes)) {
        if case .invalidOffsets(tensor: "b", begin: 8, end: 4, _, _) = $0 { true } else { false }
    },
    MalformedCase(name: "shape and size disagree",
                  bytes: Fixtures.rawSafetensors(header: "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", data: eightBytes)) {
        if case .sizeMismatch(tensor: "w", expected: 12, actual: 8, offset: 62) = $0 { true } else { false }
    },
    MalformedCase(name: "element count overflow",
                  bytes: Fixtures.rawSafetensors(header: "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", data: eightBytes)) {
        $0 == .elementCountOverflow(tensor: "w")
    },
    MalformedCase(name: "byte size overflow",
                  bytes: Fixtures.rawSafetensors(header: "{\"w\":{\"dtype\":\"F64\",\"shape\":[2305843009213693952],\"data_offsets\":[0,8]}}", data: eightBytes)) {
        $0 == .elementCountOverflow(tensor: "w")
    },
    MalformedCase(name: "dimension beyond 64 bits",
                  bytes: Fixtures.rawSafetensors(header: "{\"w\":{\(f32x2.replacingOccurrences(of: "[2]", with: "[99999999999999999999]")),\"data_offsets\":[0,8]}}", data: eightBytes)) {
        if case .nonIntegerNumber(tensor: "w", field: "shape", _) = $0 { true } else { false }
    },
    MalformedCase(name: "fractional byte size (three F4 values)",
                  bytes: Fixtures.rawSafetensors(header: "{\"w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", data: [0, 0])) {
        $0 == .fractionalByteSize(tensor: "w", bits: 12)
    },
    MalformedCase(name: "trailing bytes after data",
                  bytes: Fixtures.rawSafetensors(header: "{\"w\":{\(f32x2),\"data_offsets\":[0,8]}}", data: eightBytes + [1, 2, 3])) {
        if case .bufferSizeMismatch(expected: 8, actual: 11, _) = $0 { true } else { false }
    },
    MalformedCase(name: "truncated data",
                  bytes: Fixtures.rawSafetensors(header: "{\"w\":{\(f32x2),\"data_offsets\":[0,8]}}", data: [0, 0, 0, 0, 0])) {
        if case .bufferSizeMismatch(expected: 8, actual: 5, _) = $0 { true } else { false }
    },
    MalformedCase(name: "control character in name",
                  bytes: Fixtures.rawSafetensors(header: "{\"a\nb\":{\(f32x2),\"data_offsets\":[0,8]}}", data: eightBytes)) {
        if case .invalidJSON = $0 { true } else { false }
    },
    MalformedCase(name: "metadata is a number",
                  bytes: Fixtures.rawSafetensors(header: "{\"__metadata__\":3}", data: [])) {
        if case .invalidMetadata = $0 { true } else { false }
    },
]

/// Valid files that seed the safetensors fuzz target (with every malformed case above).
private let validSeeds: [(name: String, bytes: [UInt8])] = {
    func bytes(_ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 73 &+ 41) } }
    let mixed = "{\"__metadata__\":{\"format\":\"pt\"},"
        + "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
        + "\"b.weight\":{\"dtype\":\"BF16\",\"shape\":[4,2],\"data_offsets\":[24,40]},"
        + "\"c.bias\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[40,48]},"
        + "\"d\":{\"dtype\":\"F64\",\"shape\":[1,1],\"data_offsets\":[48,56]},"
        + "\"ids\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[56,72]},"
        + "\"mask\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[72,75]},"
        + "\"q\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[75,77]}}"
    return [
        ("valid empty header", Fixtures.rawSafetensors(header: "{}", data: [])),
        ("valid whitespace and unknown fields", Fixtures.rawSafetensors(header: "  {\"w\":{\(f32x2),\"data_offsets\":[0,8],\"extra\":[1,{}]}}\n  ", data: bytes(8))),
        ("valid null metadata", Fixtures.rawSafetensors(header: "{\"__metadata__\":null,\"w\":{\(f32x2),\"data_offsets\":[0,8]}}", data: bytes(8))),
        ("valid scalar and zero-size", Fixtures.rawSafetensors(header: "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},\"t\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", data: bytes(8))),
        ("valid mixed dtypes with metadata", Fixtures.rawSafetensors(header: mixed, data: bytes(77))),
        ("valid escaped unicode name", Fixtures.rawSafetensors(header: "{\"w\\u00e9\\n\\\"\":{\(f32x2),\"data_offsets\":[0,8]}}  ", data: bytes(8))),
    ]
}()

@Suite("Malformed safetensors files")
struct MalformedSafetensorsTests {
    @Test("the seed files of the safetensors fuzz target are exactly these malformed cases and valid files")
    func fuzzSeeds() {
        let seeds = malformedCases.map { ($0.name, $0.bytes) } + validSeeds
        let problems = FuzzSeeds.mismatches(target: "SafetensorsParser", seeds: seeds)
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n")); regenerate with \(FuzzSeeds.writeVariable)=1 swift test --filter MalformedSafetensorsTests")
    }

    @Test("the valid seed files parse and their float tensors decode")
    func validSeedsDecode() throws {
        let dir = Fixtures.temporaryDirectory("stseeds")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (name, bytes) in validSeeds {
            let path = dir + "/\(FuzzSeeds.fileName(name)).safetensors"
            Fixtures.write(bytes, to: path)
            let f = try SafetensorsFile(path: path)
            for t in f.tensors where t.dtype.isSupportedFloat { #expect(try f.floats(of: t).count == t.elementCount, "\(name): \(t.name)") }
        }
        let mixed = try SafetensorsFile(path: dir + "/valid-mixed-dtypes-with-metadata.safetensors")
        #expect(mixed.tensors.map(\.name) == ["a.weight", "b.weight", "c.bias", "d", "ids", "mask", "q"])
        #expect(mixed.metadata?.first?.value == "pt")
    }

    @Test("a file parsed from memory gives the same header and bytes as the same file mapped from disk")
    func fromMemory() throws {
        let dir = Fixtures.temporaryDirectory("stmemory")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bytes = validSeeds[4].bytes
        Fixtures.write(bytes, to: dir + "/m.safetensors")
        let disk = try SafetensorsFile(path: dir + "/m.safetensors")
        let memory = try bytes.withUnsafeBytes { try SafetensorsFile(mapping: MappedFile(copying: $0, path: "in-memory.safetensors")) }
        #expect(memory.header == disk.header)
        #expect(memory.path == "in-memory.safetensors")
        for t in disk.tensors where t.dtype.isSupportedFloat {
            #expect(try memory.floats(of: t).map(\.bitPattern) == disk.floats(of: t).map(\.bitPattern))
        }
        let broken = Array(bytes.dropLast())
        do {
            _ = try broken.withUnsafeBytes { try SafetensorsFile(mapping: MappedFile(copying: $0, path: "in-memory.safetensors")) }
            Issue.record("truncated copy accepted")
        } catch {
            #expect("\(error)".hasPrefix("in-memory.safetensors: "))
        }
    }

    @Test("each malformed file gives its specific error", arguments: malformedCases)
    func rejects(_ c: MalformedCase) throws {
        let dir = Fixtures.temporaryDirectory("malformed")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/bad.safetensors"
        Fixtures.write(c.bytes, to: path)
        let result = Result { try SafetensorsFile(path: path) }
        guard case let .failure(error) = result else {
            Issue.record("\(c.name): accepted")
            return
        }
        guard let ioError = error as? TensorIOError, case let .invalidSafetensors(errorPath, reason) = ioError else {
            Issue.record("\(c.name): unexpected error \(error)")
            return
        }
        #expect(errorPath == path)
        #expect(c.expected(reason), "\(c.name): got \(reason)")
        // The user-facing message names the file.
        #expect(ioError.description.contains(path))
    }

    @Test("accepts what the reference reader accepts: whitespace, unknown fields, empty, scalar, zero-size, null metadata")
    func acceptsLenientCases() throws {
        let dir = Fixtures.temporaryDirectory("lenient")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let headers = [
            "  {\"w\":{\(f32x2),\"data_offsets\":[0,8],\"extra\":[1,{}]}}\n  ",
            "{\"__metadata__\":null,\"w\":{\(f32x2),\"data_offsets\":[0,8]}}",
            "{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},\"t\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
        ]
        for (k, h) in headers.enumerated() {
            let path = dir + "/ok\(k).safetensors"
            Fixtures.write(Fixtures.rawSafetensors(header: h, data: eightBytes), to: path)
            let f = try SafetensorsFile(path: path)
            #expect(!f.tensors.isEmpty)
        }
        let empty = dir + "/empty.safetensors"
        Fixtures.write(Fixtures.rawSafetensors(header: "{}", data: []), to: empty)
        #expect(try SafetensorsFile(path: empty).tensors.isEmpty)
    }

    @Test("unaligned data is read correctly")
    func unalignedData() throws {
        let dir = Fixtures.temporaryDirectory("unaligned")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A 3-byte header pad makes the data start at an odd offset.
        let values: [Float] = [1.5, -2.25, 3e-8]
        let header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}"
        var data: [UInt8] = []
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
        let path = dir + "/u.safetensors"
        Fixtures.write(Fixtures.rawSafetensors(header: header + "  ", data: data), to: path)
        let f = try SafetensorsFile(path: path)
        #expect(f.header.dataStart % 4 != 0)
        #expect(try f.floats(of: f.tensors[0]) == values)
    }

    @Test("a directory or missing path gives a clear error")
    func missingPaths() throws {
        #expect(throws: TensorIOError.self) { try SafetensorsFile(path: "/nonexistent/weights.safetensors") }
        #expect(throws: TensorIOError.self) { try SafetensorsModel(path: "/nonexistent/model") }
        let dir = Fixtures.temporaryDirectory("emptydir")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            _ = try SafetensorsModel(path: dir)
            Issue.record("empty folder accepted")
        } catch let e as TensorIOError {
            #expect(e.description.contains(dir))
            #expect(e.description.contains("no .safetensors"))
        }
    }
}

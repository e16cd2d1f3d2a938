import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

@Suite("safetensors writer and float codecs")
struct RoundTripTests {
    @Test("writer output re-reads identically and follows the reference layout")
    func writeThenRead() throws {
        let dir = Fixtures.temporaryDirectory("roundtrip")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = Fixtures.floats(count: 12, seed: 1)
        let b = Fixtures.floats(count: 6, seed: 2)
        let tensors = [
            OutputTensor(name: "z.bf16", dtype: .bf16, shape: [2, 3], bytes: FloatConversion.encode(b, as: .bf16)),
            OutputTensor(name: "a.f32", dtype: .f32, shape: [3, 4], bytes: FloatConversion.encode(a, as: .f32)),
            OutputTensor(name: "m.i64", dtype: .i64, shape: [1], bytes: [7, 0, 0, 0, 0, 0, 0, 0]),
            OutputTensor(name: "b.f16", dtype: .f16, shape: [6], bytes: FloatConversion.encode(b, as: .f16)),
        ]
        let path = dir + "/out.safetensors"
        try SafetensorsWriter.write(tensors, metadata: [("format", "pt"), ("note", "quote \" and é")], to: path)
        let f = try SafetensorsFile(path: path)
        // Reference order: dtype rank descending (I64 > F32 > BF16 > F16), then name.
        #expect(f.tensors.map(\.name) == ["m.i64", "a.f32", "z.bf16", "b.f16"])
        #expect(f.header.headerLength % 8 == 0)
        #expect(f.metadata?.map(\.value) == ["pt", "quote \" and é"])
        #expect(try f.floats(of: f.descriptor(named: "a.f32")!) == a)
        // Padding is spaces, never NUL.
        let raw = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(!raw[8..<(8 + f.header.headerLength)].contains(0))
    }

    @Test("refuses to overwrite without being told to, and leaves the file untouched")
    func noClobber() throws {
        let dir = Fixtures.temporaryDirectory("clobber")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/x.safetensors"
        Fixtures.write([1, 2, 3], to: path)
        #expect(throws: TensorIOError.self) {
            try SafetensorsWriter.write([], metadata: nil, to: path)
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data([1, 2, 3]))
        try SafetensorsWriter.write([], metadata: nil, to: path, overwrite: true)
        #expect(try SafetensorsFile(path: path).tensors.isEmpty)
        // No temporary files are left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["x.safetensors"])
    }

    @Test("a producer that writes the wrong size fails and leaves nothing")
    func wrongSizeProducer() throws {
        let dir = Fixtures.temporaryDirectory("wrongsize")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t = OutputTensor(name: "w", dtype: .f32, shape: [4], bytes: [0, 0, 0, 0])
        #expect(throws: TensorIOError.self) { try SafetensorsWriter.write([t], metadata: nil, to: dir + "/w.safetensors") }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    @Test("bf16 encoding rounds to nearest even and keeps NaN quiet")
    func bf16Rounding() {
        // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
        #expect(FloatConversion.floatToBF16(1 + 0x1p-8) == 0x3F80)
        // 1 + 3·2^-8 is halfway between 1.0078125 (odd mantissa) and 1.015625: rounds up to even.
        #expect(FloatConversion.floatToBF16(1 + 3 * 0x1p-8) == 0x3F82)
        #expect(FloatConversion.floatToBF16(1 + 0x1p-8 + 0x1p-20) == 0x3F81)
        #expect(FloatConversion.floatToBF16(-.infinity) == 0xFF80)
        let nan = FloatConversion.floatToBF16(Float(bitPattern: 0x7F80_0001))
        #expect(FloatConversion.bf16ToFloat(nan).isNaN)
        #expect(FloatConversion.floatToBF16(Float.greatestFiniteMagnitude) == 0x7F80) // overflows to +inf
    }

    @Test("f16 decode table matches Float16 on all 65,536 patterns; f16 and bf16 round-trip their own values")
    func halfCodecsExhaustive() {
        var bitsF16 = [UInt8](), bitsBF16 = [UInt8]()
        for u in 0...UInt16.max {
            withUnsafeBytes(of: u.littleEndian) { bitsF16.append(contentsOf: $0); bitsBF16.append(contentsOf: $0) }
        }
        let f16 = bitsF16.withUnsafeBytes { FloatConversion.decode($0, dtype: .f16) }
        let bf16 = bitsBF16.withUnsafeBytes { FloatConversion.decode($0, dtype: .bf16) }
        var mismatches = 0
        for u in 0...Int(UInt16.max) {
            let h = Float16(bitPattern: UInt16(u))
            if h.isNaN { if !f16[u].isNaN { mismatches += 1 } } else if f16[u].bitPattern != Float(h).bitPattern { mismatches += 1 }
            if !bf16[u].isNaN && FloatConversion.floatToBF16(bf16[u]) != UInt16(u) { mismatches += 1 }
            if !h.isNaN && FloatConversion.floatToF16(f16[u]) != UInt16(u) { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }

    @Test("F64 decodes and encodes")
    func f64() {
        let values: [Float] = [0, -1.5, 3.25e-20, 1e30]
        let bytes = FloatConversion.encode(values, as: .f64)
        #expect(bytes.count == 32)
        #expect(bytes.withUnsafeBytes { FloatConversion.decode($0, dtype: .f64) } == values)
    }

    @Test("sharded folders are written with an index and read back as one model")
    func shardedRoundTrip() throws {
        let dir = Fixtures.temporaryDirectory("sharded")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/model"
        let w1 = Fixtures.floats(count: 8, seed: 3), w2 = Fixtures.floats(count: 4, seed: 4)
        try ModelWriter.writeFolder([
            .init(fileName: "model-00001-of-00002.safetensors",
                  tensors: [OutputTensor(name: "a", dtype: .f32, shape: [2, 4], bytes: FloatConversion.encode(w1, as: .f32))],
                  metadata: [("format", "pt")]),
            .init(fileName: "model-00002-of-00002.safetensors",
                  tensors: [OutputTensor(name: "b", dtype: .bf16, shape: [4], bytes: FloatConversion.encode(w2, as: .bf16))],
                  metadata: [("format", "pt")]),
        ], indexMetadata: [JSONMember(key: "total_size", value: .number("0"))], to: out, overwrite: false)
        let model = try SafetensorsModel(path: out)
        #expect(model.layout == .sharded)
        #expect(model.tensors.map(\.name) == ["a", "b"])
        #expect(try model.floats(of: model.tensor(named: "a")!) == w1)
        #expect(model.indexMetadata.first?.value == .number("40"))
        // Rewriting keeps the layout; a transform replaces one tensor.
        let copy = dir + "/copy"
        try ModelWriter.write(like: model, to: copy, overwrite: false) { t in
            t.name == "b" ? OutputTensor(name: "b", dtype: .bf16, shape: [4], bytes: FloatConversion.encode([1, 2, 3, 4], as: .bf16)) : nil
        }
        let model2 = try SafetensorsModel(path: copy)
        #expect(model2.shardNames == model.shardNames)
        #expect(try model2.floats(of: model2.tensor(named: "b")!) == [1, 2, 3, 4])
        try model.withBytes(of: model.tensor(named: "a")!) { a1 in
            try model2.withBytes(of: model2.tensor(named: "a")!) { a2 in #expect(Array(a1) == Array(a2)) }
        }
        #expect(throws: TensorIOError.self) {
            try ModelWriter.write(like: model, to: copy, overwrite: false) { _ in nil }
        }
    }

    @Test("an index that names a missing tensor or shard is rejected")
    func badIndex() throws {
        let dir = Fixtures.temporaryDirectory("badindex")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try SafetensorsWriter.write([OutputTensor(name: "a", dtype: .f32, shape: [1], bytes: [0, 0, 0, 0])],
                                    metadata: nil, to: dir + "/s1.safetensors")
        let cases = [
            "{\"weight_map\":{\"a\":\"s1.safetensors\",\"ghost\":\"s1.safetensors\"}}",
            "{\"weight_map\":{\"a\":\"s2.safetensors\"}}",
            "{\"weight_map\":{\"a\":\"../s1.safetensors\"}}",
            "{\"metadata\":{}}",
            "{\"weight_map\":",
        ]
        for text in cases {
            Fixtures.write(Array(text.utf8), to: dir + "/model.safetensors.index.json")
            do {
                _ = try SafetensorsModel(path: dir)
                Issue.record("accepted index \(text)")
            } catch let e as TensorIOError {
                #expect(e.description.contains("model.safetensors.index.json"), "\(e)")
            }
        }
    }
}

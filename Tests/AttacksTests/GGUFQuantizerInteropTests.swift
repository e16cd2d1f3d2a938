import Conversion
import Foundation
import Testing
import Attacks
import TensorIO
import WeightMarkTestSupport

/// Byte-for-byte agreement with the PyPI `gguf` package's quantizers (the llama.cpp reference in Python),
/// and agreement of our dequantizer with its dequantizer.
@Suite("GGUF block quantizers vs the gguf package", .enabled(if: Fixtures.oraclesAvailable, "Python oracle venv not installed"))
struct GGUFQuantizerInteropTests {
    static let values: [Float] = {
        var v = Fixtures.floats(count: 8 * 512, seed: 77, scale: 0.03)
        // Edge cases: an all-zero block, a constant block, ties, a single outlier.
        for i in 0..<32 { v[i] = 0 }
        for i in 32..<64 { v[i] = 0.25 }
        for i in 64..<96 { v[i] = Float(i - 80) * 0.5 }
        v[200] = 3
        return v
    }()

    func oracle(_ type: String) throws -> (bytes: String, dequantized: [Float]) {
        let dir = Fixtures.temporaryDirectory("ggufq")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let input = dir + "/x.f32"
        Fixtures.write(FloatConversion.encode(Self.values, as: .f32), to: input)
        let out = try Fixtures.runPython("""
        import sys, json
        import numpy as np
        from gguf import quants, GGMLQuantizationType
        x = np.fromfile(sys.argv[1], dtype=np.float32).reshape(8, 512)
        t = GGMLQuantizationType[sys.argv[2]]
        q = quants.quantize(x, t)
        d = quants.dequantize(q, t).astype(np.float32)
        print(json.dumps({"bytes": q.tobytes().hex(), "deq": d.tobytes().hex()}))
        """, arguments: [input, type])
        let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: String]
        return (json["bytes"]!, Fixtures.floats(fromHex: json["deq"]!))
    }

    @Test("our bytes equal gguf's, and our dequantization equals gguf's", arguments: [GGMLType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1])
    func byteIdentical(_ type: GGMLType) throws {
        let (expected, deq) = try oracle(type.name)
        var ours: [UInt8] = []
        for r in 0..<8 { ours += GGMLQuantizer.quantize(Array(Self.values[(r * 512)..<((r + 1) * 512)]), as: type) }
        #expect(Fixtures.hex(ours) == expected)
        let back = ours.withUnsafeBytes { GGMLBlockCodec.dequantize($0, as: type, count: 8 * 512) }
        #expect(back == deq)
    }

    @Test("K-quant bytes dequantize in gguf to our values, with error at ggml's level", arguments: [GGMLType.q4_K, .q6_K])
    func kQuants(_ type: GGMLType) throws {
        var ours: [UInt8] = []
        for r in 0..<8 { ours += GGMLQuantizer.quantize(Array(Self.values[(r * 512)..<((r + 1) * 512)]), as: type) }
        let dir = Fixtures.temporaryDirectory("q4k")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        Fixtures.write(ours, to: dir + "/q.bin")
        let out = try Fixtures.runPython("""
        import sys
        import numpy as np
        from gguf import quants, GGMLQuantizationType
        q = np.fromfile(sys.argv[1], dtype=np.uint8).reshape(8, -1)
        print(quants.dequantize(q, GGMLQuantizationType[sys.argv[2]]).astype(np.float32).tobytes().hex())
        """, arguments: [dir + "/q.bin", type.name])
        let theirs = Fixtures.floats(fromHex: out)
        let mine = ours.withUnsafeBytes { GGMLBlockCodec.dequantize($0, as: type, count: 8 * 512) }
        #expect(mine == theirs)
        // Error level: Q4_K's search must do at least as well as plain 4-bit affine rounding per 32-block (Q4_1);
        // Q6_K (6.6 bits/weight) must beat Q5_1 (6 bits/weight).
        func rel(_ d: [Float]) -> Double {
            var e = 0.0, n = 0.0
            for i in 96..<Self.values.count { e += Double(d[i] - Self.values[i]) * Double(d[i] - Self.values[i]); n += Double(Self.values[i] * Self.values[i]) }
            return (e / n).squareRoot()
        }
        let baseline: GGMLType = type == .q4_K ? .q4_1 : .q5_1
        var q: [UInt8] = []
        for r in 0..<8 { q += GGMLQuantizer.quantize(Array(Self.values[(r * 512)..<((r + 1) * 512)]), as: baseline) }
        let errBaseline = rel(q.withUnsafeBytes { GGMLBlockCodec.dequantize($0, as: baseline, count: 8 * 512) })
        #expect(rel(mine) < 1.15 * errBaseline, "\(type.name) error \(rel(mine)) vs \(baseline.name) \(errBaseline)")
        #expect(rel(mine) < (type == .q4_K ? 0.12 : 0.03))
    }

    @Test("Q6_K: our dequantizer matches gguf's on random blocks")
    func q6KDequant() throws {
        var rng = SystemRandomNumberGenerator()
        var blocks = (0..<(4 * 210)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for b in 0..<4 { blocks[b * 210 + 208] = 0x00; blocks[b * 210 + 209] = 0x1C } // d = small positive f16
        let dir = Fixtures.temporaryDirectory("q6k")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        Fixtures.write(blocks, to: dir + "/q.bin")
        let out = try Fixtures.runPython("""
        import sys
        import numpy as np
        from gguf import quants, GGMLQuantizationType
        q = np.fromfile(sys.argv[1], dtype=np.uint8).reshape(4, 210)
        print(quants.dequantize(q, GGMLQuantizationType.Q6_K).astype(np.float32).tobytes().hex())
        """, arguments: [dir + "/q.bin"])
        let theirs = Fixtures.floats(fromHex: out)
        let mine = blocks.withUnsafeBytes { GGMLBlockCodec.dequantize($0, as: .q6_K, count: 4 * 256) }
        #expect(mine == theirs)
    }
}

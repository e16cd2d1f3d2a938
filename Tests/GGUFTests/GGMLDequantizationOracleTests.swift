import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// Every block type llama.cpp writes, quantized by ggml itself (`ggml_quantize_chunk` from llama-cpp-python's
/// libggml, with an importance matrix where ggml requires one): WeightMark's dequantization must equal ggml's
/// own `to_float` and the PyPI `gguf` package's bit for bit.
@Suite("Dequantization vs ggml and gguf-py, every type", .enabled(if: Fixtures.llamaCppAvailable, "llama-cpp-python not installed"))
struct GGMLDequantizationOracleTests {
    struct Oracle: Sendable {
        var directory: String
        var entries: [String: (id: UInt32, count: Int, ggufPy: Bool)]
    }

    /// One oracle run for all types (each test reads its own files).
    static let oracle: Result<Oracle, any Error> = Result {
        let dir = Fixtures.temporaryDirectory("ggml-types")
        let json = try Fixtures.llamaOracle(["dequant-types", dir])
        var entries: [String: (id: UInt32, count: Int, ggufPy: Bool)] = [:]
        for (name, value) in json {
            guard let e = value as? [String: Any], let id = e["id"] as? Int, let count = e["count"] as? Int else { continue }
            entries[name] = (UInt32(id), count, e["gguf_py"] as? Bool ?? false)
        }
        return Oracle(directory: dir, entries: entries)
    }

    static func read(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

    @Test("bit-identical with ggml's to_float and gguf-py's dequantize",
          arguments: ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL", "IQ4_XS",
                      "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q8_0"])
    func bitIdentical(_ name: String) throws {
        let oracle = try Self.oracle.get()
        let entry = try #require(oracle.entries[name], "the oracle produced no \(name) data")
        let type = try #require(GGMLType(rawValue: entry.id), "ggml type id \(entry.id) (\(name)) unknown to WeightMark")
        #expect(type.name == name)
        #expect(GGMLBlockCodec.supportedForDecoding.contains(type))
        let blocks = try Self.read(oracle.directory + "/\(name).blocks")
        let ours = blocks.withUnsafeBytes { GGMLBlockCodec.dequantize($0, as: type, count: entry.count) }
        let ggml = try Self.read(oracle.directory + "/\(name).ggml.f32").withUnsafeBytes { FloatConversion.decode($0, dtype: .f32) }
        #expect(ours.count == ggml.count)
        let mismatches = zip(ours, ggml).filter { $0.bitPattern != $1.bitPattern }.count
        #expect(mismatches == 0, "\(name): \(mismatches) of \(ggml.count) values differ from ggml's")
        #expect(ggml.contains { $0 != 0 }, "\(name): the oracle's data is all zeros")
        // gguf 0.19.0 has no Q1_0 / Q2_0 (ids 41, 42): ggml's own dequantizer is their reference.
        #expect(entry.ggufPy || ["Q1_0", "Q2_0"].contains(name), "\(name): gguf-py did not dequantize it")
        if entry.ggufPy {
            let py = try Self.read(oracle.directory + "/\(name).gguf.f32").withUnsafeBytes { FloatConversion.decode($0, dtype: .f32) }
            let pyMismatches = zip(ours, py).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(pyMismatches == 0, "\(name): \(pyMismatches) of \(py.count) values differ from gguf-py's")
        }
    }
}

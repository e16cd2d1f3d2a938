import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// A selected tensor in a block type WeightMark cannot decode is listed as skipped with its type, never dropped.
@Suite("detect reports tensors it cannot decode")
struct UndecodableTensorTests {
    @Test("a Q8_K matrix (a ggml type no dequantizer here handles) appears in skipped with the reason")
    func undecodableIsSkipped() throws {
        let dir = Fixtures.temporaryDirectory("undecodable")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(!GGMLBlockCodec.supportedForDecoding.contains(.q8_K))
        let rows = 256, cols = 512
        let decodable = FloatConversion.encode(Fixtures.floats(count: rows * cols, seed: 3), as: .f32)
        let q8K = [UInt8](repeating: 0, count: rows * cols / 256 * GGMLType.q8_K.blockLayout.bytes)
        try GGUFWriter.write(metadata: [("general.architecture", .string("llama")), ("llama.attention.head_count", .uint32(4))],
                             tensors: [GGUFOutputTensor(name: "blk.0.ffn_up.weight", shape: [rows, cols], type: .f32, bytes: decodable),
                                       GGUFOutputTensor(name: "blk.0.ffn_down.weight", shape: [rows, cols], type: .q8_K, bytes: q8K)],
                             to: dir + "/m.gguf", overwrite: false)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key"]).status == 0)
        let r = try Fixtures.weightmark(["detect", dir + "/m.gguf", "--key", dir + "/k.key", "--json"])
        #expect(r.status == 1, "\(r.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let skipped = try #require(json["skipped"] as? [[String: String]])
        let entry = try #require(skipped.first { $0["name"] == "model.layers.0.mlp.down_proj.weight" }, "skipped: \(skipped)")
        #expect(entry["reason"]?.contains("Q8_K") == true)
        #expect((json["tensors"] as? [Any])?.count == 1)
    }
}

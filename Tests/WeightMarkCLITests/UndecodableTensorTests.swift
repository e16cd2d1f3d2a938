import Conversion
import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// A selected tensor in a block type WeightMark cannot decode is listed as skipped with its type, never dropped, and
/// counts against the read coverage (docs/FORMAT.md, "Inconclusive").
@Suite("detect reports tensors it cannot decode")
struct UndecodableTensorTests {
    @Test("a matrix in a ggml type no dequantizer here handles appears in skipped with its type",
          arguments: [GGMLType.q8_K, .q4_0_4_4, .iq4_NL_4_4])
    func undecodableIsSkipped(_ type: GGMLType) throws {
        let dir = Fixtures.temporaryDirectory("undecodable")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(!GGMLBlockCodec.supportedForDecoding.contains(type))
        let rows = 256, cols = 512
        let decodable = FloatConversion.encode(Fixtures.floats(count: rows * cols, seed: 3), as: .f32)
        let (block, bytes) = type.blockLayout
        let undecodable = [UInt8](repeating: 0, count: rows * cols / block * bytes)
        try GGUFWriter.write(metadata: [("general.architecture", .string("llama")), ("llama.attention.head_count", .uint32(4))],
                             tensors: [GGUFOutputTensor(name: "blk.0.ffn_up.weight", shape: [rows, cols], type: .f32, bytes: decodable),
                                       GGUFOutputTensor(name: "blk.0.ffn_down.weight", shape: [rows, cols], type: type, bytes: undecodable)],
                             to: dir + "/m.gguf", overwrite: false)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key"]).status == 0)
        let r = try Fixtures.weightmark(["detect", dir + "/m.gguf", "--key", dir + "/k.key", "--json"])
        // One of the two matrices unread (50% > 10%): no negative verdict, "inconclusive" (exit 3).
        #expect(r.status == 3, "\(r.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(json["inconclusive"] as? Bool == true)
        let skipped = try #require(json["skipped"] as? [[String: String]])
        let entry = try #require(skipped.first { $0["name"] == "model.layers.0.mlp.down_proj.weight" }, "skipped: \(skipped)")
        #expect(entry["reason"]?.contains(type.name) == true, "\(entry)")
        #expect((json["tensors"] as? [Any])?.count == 1)
    }
}

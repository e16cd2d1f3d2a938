import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

@Suite("weightmark inspect")
struct InspectCommandTests {
    @Test("lists tensors, totals and metadata; --json and --stats agree with the data")
    func smallModel() throws {
        let dir = Fixtures.temporaryDirectory("inspect")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let w: [Float] = [0, 0, 1, -3, 2, 0]
        let path = dir + "/m.safetensors"
        try SafetensorsWriter.write([
            OutputTensor(name: "layer.weight", dtype: .bf16, shape: [2, 3], bytes: FloatConversion.encode(w, as: .bf16)),
            OutputTensor(name: "ids", dtype: .i64, shape: [2], bytes: [UInt8](repeating: 0, count: 16)),
        ], metadata: [("format", "pt")], to: path)

        let human = try Fixtures.weightmark(["inspect", path])
        #expect(human.status == 0)
        #expect(human.stdout.contains("2 tensors, 8 parameters"))
        #expect(human.stdout.contains("layer.weight"))
        #expect(human.stdout.contains("format=pt"))

        let r = try Fixtures.weightmark(["inspect", path, "--json", "--stats", "--quiet"])
        #expect(r.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(json["parameters"] as? Int == 8)
        #expect(json["tensorCount"] as? Int == 2)
        let tensors = json["tensors"] as! [[String: Any]]
        let layer = try #require(tensors.first { $0["name"] as? String == "layer.weight" })
        #expect(layer["shape"] as? [Int] == [2, 3])
        let stats = layer["statistics"] as! [String: Any]
        #expect(abs((stats["zeroFraction"] as! Double) - 0.5) < 1e-12)
        #expect(abs((stats["maxAbs"] as! Double) - 3) < 1e-12)
        #expect(abs((stats["mean"] as! Double) - 0) < 1e-12)
        #expect(abs((stats["rms"] as! Double) - (14.0 / 6).squareRoot()) < 1e-6)
        let ids = try #require(tensors.first { $0["name"] as? String == "ids" })
        #expect(ids["statistics"] == nil)
    }

    @Test("a broken file exits 2 with a message naming the file and the byte")
    func brokenFile() throws {
        let dir = Fixtures.temporaryDirectory("inspect-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/bad.safetensors"
        Fixtures.write(Fixtures.rawSafetensors(header: "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", data: [0, 0, 0]), to: path)
        let r = try Fixtures.weightmark(["inspect", path])
        #expect(r.status == 2)
        #expect(r.stderr.contains(path))
        #expect(r.stderr.contains("truncated at byte"))
        #expect(!r.stderr.contains("Fatal"))
    }

    @Test("MiniLM: 104 tensors, 22,713,728 parameters, one I64 buffer", .enabled(if: Fixtures.miniLMAvailable))
    func miniLM() throws {
        let path = try #require(Fixtures.miniLM)
        let r = try Fixtures.weightmark(["inspect", path, "--json"])
        #expect(r.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(json["tensorCount"] as? Int == 104)
        #expect(json["parameters"] as? Int == 22_713_728)
        #expect(json["parametersByDType"] as? [String: Int] == ["F32": 22_713_216, "I64": 512])
        #expect(json["metadata"] as? [String: String] == ["format": "pt"])
    }
}

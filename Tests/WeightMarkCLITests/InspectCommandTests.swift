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

    // Regression: tensor offsets near 2^62 and 2^63 trapped the GGUF parser (SIGILL, exit 132).
    @Test("a 192-byte GGUF with tensor offsets near 2^62 and 2^63: inspect and detect exit 2 naming the file")
    func hugeGGUFOffsets() throws {
        let dir = Fixtures.temporaryDirectory("inspect-gguf")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var b: [UInt8] = Array("GGUF".utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        u32(3); u64(3); u64(0)
        for (name, ne, offset) in [("a", UInt64(1) << 60, UInt64(0)), ("b", 1 << 60, 1 << 62), ("c", 8, 1 << 63)] {
            u64(1); b += Array(name.utf8); u32(1); u64(ne); u32(0); u64(offset)
        }
        b += [UInt8](repeating: 0, count: 192 - b.count)
        let path = dir + "/huge-offsets.gguf"
        Fixtures.write(b, to: path)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key"]).status == 0)
        for args in [["inspect", path], ["inspect", path, "--json", "--stats"], ["detect", path, "--key", dir + "/k.key"]] {
            let r = try Fixtures.weightmark(args)
            #expect(r.status == 2, "\(args): exit \(r.status), \(r.stderr)")
            #expect(r.stderr.contains(path + ": not a valid GGUF file"), "\(args): \(r.stderr)")
            #expect(r.stderr.contains("past the end of the 192-byte file"), "\(args): \(r.stderr)")
            #expect(!r.stderr.contains("Fatal error"))
        }
    }

    // Regression (found by the GGUF fuzz target): two tensors under one Hugging Face name made detect read one
    // tensor's values with the other's shape and trap (exit 132).
    @Test("a GGUF whose tensors collide under one Hugging Face name: inspect and detect exit 2 naming both")
    func duplicateHuggingFaceName() throws {
        let dir = Fixtures.temporaryDirectory("inspect-gguf-dup")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var b: [UInt8] = Array("GGUF".utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); b += Array(s.utf8) }
        u32(3); u64(2); u64(1)
        str("general.architecture"); u32(8); str("llama")
        str("output_norm.weight"); u32(1); u64(4); u32(0); u64(0)
        str("model.norm.weight"); u32(1); u64(8); u32(0); u64(32)
        b += [UInt8](repeating: 0, count: (32 - b.count % 32) % 32 + 64)
        let path = dir + "/dup.gguf"
        Fixtures.write(b, to: path)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key"]).status == 0)
        for args in [["inspect", path], ["detect", path, "--key", dir + "/k.key"]] {
            let r = try Fixtures.weightmark(args)
            #expect(r.status == 2, "\(args): exit \(r.status), \(r.stderr)")
            #expect(r.stderr.contains(path + ": not a valid GGUF file"), "\(args): \(r.stderr)")
            #expect(r.stderr.contains("both map to the Hugging Face name \"model.norm.weight\""), "\(args): \(r.stderr)")
            #expect(!r.stderr.contains("Fatal error"))
        }
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

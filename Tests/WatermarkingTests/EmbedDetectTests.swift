import Foundation
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport

@Suite("Embed and detect on a small model")
struct EmbedDetectTests {
    static let key = WatermarkKey(secret: (0..<32).map { UInt8(255 - $0) })
    static let otherKey = WatermarkKey(secret: (0..<32).map { UInt8(($0 * 7) & 0xFF) })
    static var v1: DetectOptions { var o = DetectOptions(); o.format = .v1; return o }

    func embed(_ source: String, _ out: String, key: WatermarkKey = key, shaping: WatermarkShaping = .uniform,
               strength: WatermarkStrength = .relativeDistortion(0.03), hashInputs: Bool = false) throws -> EmbedManifest {
        let model = try SafetensorsModel(path: source)
        var options = EmbedOptions()
        options.format = .v1 // these tests check v1's mechanics (V2Tests covers the default format)
        options.hashInputs = hashInputs
        options.shaping = shaping
        options.strength = strength
        options.maximumDistortion = 0.05
        return try Embedder.embed(model, key: key, options: options, plan: Embedder.plan(model, options: options),
                                  to: out, overwrite: false)
    }

    @Test("same key and input give byte-identical output and manifest hashes; unselected tensors are untouched")
    func determinism() throws {
        let dir = Fixtures.temporaryDirectory("determinism")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/m.safetensors", dtype: .bf16)
        let m1 = try embed(dir + "/m.safetensors", dir + "/a.safetensors", hashInputs: true)
        let m2 = try embed(dir + "/m.safetensors", dir + "/b.safetensors")
        #expect(m1.output.map(\.sha256) == m2.output.map(\.sha256))
        // Digests computed while writing equal a fresh hash of the files.
        #expect(m1.output == [try FileDigest.of(file: dir + "/a.safetensors")])
        #expect(m1.input == [try FileDigest.of(file: dir + "/m.safetensors")])
        // Without hashInputs the input is recorded by name and size only.
        let input = try FileDigest.of(file: dir + "/m.safetensors")
        #expect(m2.input == [FileDigest(file: input.file, bytes: input.bytes, sha256: nil)])
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/a.safetensors")) == Data(contentsOf: URL(fileURLWithPath: dir + "/b.safetensors")))
        #expect(m1.tensors.map(\.name).sorted() == ["embed_tokens.weight", "layers.0.attn.q_proj.weight", "layers.0.mlp.down_proj.weight", "layers.0.mlp.up_proj.weight"])
        let original = try SafetensorsModel(path: dir + "/m.safetensors")
        let marked = try SafetensorsModel(path: dir + "/a.safetensors")
        #expect(marked.tensors.map(\.dtype) == original.tensors.map(\.dtype))
        #expect(marked.shards[0].metadata?.first?.value == "pt")
        for name in ["layers.0.input_layernorm.weight", "layers.0.mlp.up_proj.bias"] {
            original.withBytes(of: original.tensor(named: name)!) { a in
                marked.withBytes(of: marked.tensor(named: name)!) { b in #expect(Array(a) == Array(b)) }
            }
        }
        // A different key gives a different output.
        let m3 = try embed(dir + "/m.safetensors", dir + "/c.safetensors", key: Self.otherKey)
        #expect(m3.output.map(\.sha256) != m1.output.map(\.sha256))
    }

    @Test("measured distortion matches δ; the marked model is detected blind and informed, the original and a wrong key are not",
          arguments: WatermarkShaping.allCases)
    func detection(_ shaping: WatermarkShaping) throws {
        let dir = Fixtures.temporaryDirectory("detect")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/m.safetensors")
        let manifest = try embed(dir + "/m.safetensors", dir + "/w.safetensors", shaping: shaping)
        #expect(manifest.tensors.count == 4)
        for t in manifest.tensors { #expect(abs(t.measuredDelta - 0.03) < 1e-4, "\(t.name)") }
        let original = try SafetensorsModel(path: dir + "/m.safetensors")
        let marked = try SafetensorsModel(path: dir + "/w.safetensors")
        let blind = try Detector.detect(suspect: marked, reference: nil, key: Self.key, options: Self.v1)
        #expect(blind.detected, "blind Z = \(blind.combinedZ)")
        // Expected blind Z within a loose factor of the plan's prediction.
        #expect(blind.combinedZ > 0.6 * manifest.expectedBlindZ && blind.combinedZ < 1.5 * manifest.expectedBlindZ)
        let informed = try Detector.detect(suspect: marked, reference: original, key: Self.key, options: Self.v1)
        #expect(informed.detected)
        #expect(informed.combinedZ > 50)
        #expect(!(try Detector.detect(suspect: original, reference: nil, key: Self.key, options: Self.v1).detected))
        #expect(!(try Detector.detect(suspect: marked, reference: nil, key: Self.otherKey, options: Self.v1).detected))
        #expect(!(try Detector.detect(suspect: marked, reference: original, key: Self.otherKey, options: Self.v1).detected))
    }

    @Test("informed detection masks pruned weights as erasures")
    func erasures() throws {
        let dir = Fixtures.temporaryDirectory("erasure")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let values = try Fixtures.writeSmallModel(to: dir + "/m.safetensors")
        _ = try embed(dir + "/m.safetensors", dir + "/w.safetensors", strength: .relativeDistortion(0.004))
        let marked = try SafetensorsModel(path: dir + "/w.safetensors")
        // Prune 60% of every selected tensor by magnitude.
        try ModelWriter.write(like: marked, to: dir + "/p.safetensors", overwrite: false) { t in
            guard t.shape.count == 2 else { return nil }
            var w = try marked.floats(of: t)
            let threshold = w.map(abs).sorted()[Int(0.6 * Double(w.count))]
            for i in w.indices where abs(w[i]) < threshold { w[i] = 0 }
            return OutputTensor(name: t.name, dtype: t.dtype, shape: t.shape, bytes: FloatConversion.encode(w, as: t.dtype))
        }
        let pruned = try SafetensorsModel(path: dir + "/p.safetensors")
        let original = try SafetensorsModel(path: dir + "/m.safetensors")
        let r = try Detector.detect(suspect: pruned, reference: original, key: Self.key, options: Self.v1)
        #expect(r.detected)
        let q = try #require(r.tensors.first { $0.name == "layers.0.attn.q_proj.weight" })
        #expect(abs(Double(q.erased) / Double(values["layers.0.attn.q_proj.weight"]!.count) - 0.6) < 0.01)
        // Masking = zeroing the erased residuals: the explicit computation agrees with the detector's.
        let suspectQ = try pruned.floats(of: pruned.tensor(named: q.name)!)
        let referenceQ = values[q.name]!
        let carriersQ = try Carriers.derive(secret: Self.key.secret, tensor: q.name, rows: 256, cols: 256)
        let masked = try Detector.score(name: q.name, suspect: zip(suspectQ, referenceQ).map { $0 == 0 ? 0 : $0 - $1 },
                                       reference: nil, rows: 256, cols: 256, carriers: carriersQ)
        #expect(abs(masked.z - q.z) <= 1e-4 * abs(q.z), "masked z \(masked.z), detector z \(q.z)")
        // Without masking, the pruned host comes back as noise: the plain residual suspect − reference (−w at
        // every pruned weight) scores far lower than the masked one.
        let unmasked = try Detector.score(name: q.name, suspect: zip(suspectQ, referenceQ).map { $0 - $1 },
                                         reference: nil, rows: 256, cols: 256, carriers: carriersQ)
        #expect(q.z > 3 * abs(unmasked.z), "masked z \(q.z), unmasked z \(unmasked.z)")
        #expect(q.z > 5.3) // this tensor alone is detected only thanks to the masking
    }

    @Test("reports of disjoint tensor sets combine into the single-run verdict")
    func combine() throws {
        let dir = Fixtures.temporaryDirectory("combine")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/m.safetensors")
        _ = try embed(dir + "/m.safetensors", dir + "/w.safetensors", strength: .relativeDistortion(0.01))
        let marked = try SafetensorsModel(path: dir + "/w.safetensors")
        let whole = try Detector.detect(suspect: marked, reference: nil, key: Self.key, options: Self.v1)
        var first = Self.v1; first.part = ReportPart(index: 0, count: 3)
        var second = Self.v1; second.part = ReportPart(index: 1, count: 3)
        var third = Self.v1; third.part = ReportPart(index: 2, count: 3)
        let r1 = try Detector.detect(suspect: marked, reference: nil, key: Self.key, options: first)
        let r2 = try Detector.detect(suspect: marked, reference: nil, key: Self.key, options: second)
        let r3 = try Detector.detect(suspect: marked, reference: nil, key: Self.key, options: third)
        #expect(r1.tensors.count == 2 && r2.tensors.count == 1 && r3.tensors.count == 1)
        // Through JSON, as `combine` reads them.
        let decoded = try [r1, r2, r3].map { try JSONDecoder().decode(DetectionReport.self, from: JSONEncoder().encode($0)) }
        let merged = try DetectionReport.combining(decoded)
        #expect(abs(merged.combinedZ - whole.combinedZ) < 1e-9 * abs(whole.combinedZ))
        #expect(merged.detected == whole.detected)
        #expect(throws: WatermarkError.self) { try DetectionReport.combining([r1, r1]) }
        let other = try Detector.detect(suspect: marked, reference: nil, key: Self.otherKey, options: second)
        #expect(throws: WatermarkError.self) { try DetectionReport.combining([r1, other, r3]) }
    }

    @Test("missing and reshaped tensors are reported, not fatal")
    func missingTensors() throws {
        let dir = Fixtures.temporaryDirectory("missing")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/m.safetensors")
        let manifest = try embed(dir + "/m.safetensors", dir + "/w.safetensors")
        let marked = try SafetensorsModel(path: dir + "/w.safetensors")
        try ModelWriter.write(like: marked, to: dir + "/cut.safetensors", overwrite: false) { t in
            if t.name == "layers.0.mlp.up_proj.weight" {
                // Reshaped: 512×256 stored as 256×512.
                return OutputTensor(name: t.name, dtype: t.dtype, shape: [256, 512]) { sink in try marked.withBytes(of: t) { try sink($0) } }
            }
            return nil
        }
        let cut = try SafetensorsModel(path: dir + "/cut.safetensors")
        let r = try Detector.detect(suspect: cut, reference: nil, key: Self.key, options: Self.v1,
                                    expected: manifest.tensors.map { ($0.name, $0.shape) })
        #expect(r.skipped.contains { $0.name == "layers.0.mlp.up_proj.weight" && $0.reason.contains("reshaped") })
        #expect(r.detected)
    }

    @Test("a model with no selectable tensor is a clear error")
    func nothingSelected() throws {
        let dir = Fixtures.temporaryDirectory("none")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/m.safetensors", shapes: [("norm.weight", [512])])
        let model = try SafetensorsModel(path: dir + "/m.safetensors")
        #expect(throws: WatermarkError.self) { try Embedder.plan(model, options: EmbedOptions()) }
    }
}

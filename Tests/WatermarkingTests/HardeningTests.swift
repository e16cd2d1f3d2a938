import Foundation
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport

/// Regressions for issue [hardening]: unmarked weights shipped, NaN/Inf, cherry-picked reports, key permissions.
@Suite("Hardening: what embed ships, non-finite weights, report integrity")
struct HardeningTests {
    static let key = WatermarkKey(secret: (0..<32).map { UInt8(($0 * 11 + 3) & 0xFF) })

    func options(_ delta: Double = 0.005) -> EmbedOptions {
        var o = EmbedOptions()
        o.strength = .relativeDistortion(delta)
        o.maximumDistortion = 0.05
        return o
    }

    /// A sentence-transformers-like folder: the safetensors model, a PyTorch copy of the same weights, a small
    /// training_args.bin pickle, config files and a `1_Pooling/` module.
    func writeFolder(_ dir: String) throws {
        try FileManager.default.createDirectory(atPath: dir + "/1_Pooling", withIntermediateDirectories: true)
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors")
        Fixtures.write(Array("{\"model_type\": \"bert\"}".utf8), to: dir + "/config.json")
        Fixtures.write(Array("{\"pooling_mode_mean_tokens\": true}".utf8), to: dir + "/1_Pooling/config.json")
        Fixtures.write(Array("[{\"path\": \"1_Pooling\"}]".utf8), to: dir + "/modules.json")
        // A zip (what torch.save writes) large enough to hold weights, and a small pickle that holds none.
        Fixtures.write([0x50, 0x4B, 0x03, 0x04] + [UInt8](repeating: 7, count: 200_000), to: dir + "/pytorch_model.bin")
        Fixtures.write([0x80, 0x02, 0x7D, 0x71, 0x00, 0x2E], to: dir + "/training_args.bin")
    }

    @Test("embed refuses a folder whose other weight files would ship unmarked; with dropUnmarkedWeights they are left out")
    func unmarkedWeightFiles() throws {
        let dir = Fixtures.temporaryDirectory("aux")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeFolder(dir + "/in")
        let model = try SafetensorsModel(path: dir + "/in")
        #expect(model.auxiliaryWeightFiles == ["pytorch_model.bin"])
        var o = options()
        let plan = try Embedder.plan(model, options: o)
        #expect {
            try Embedder.embed(model, key: Self.key, options: o, plan: plan, to: dir + "/out", overwrite: false)
        } throws: { error in
            guard case let .unmarkedWeightFiles(_, files) = error as? WatermarkError else { return false }
            return files == ["pytorch_model.bin"] && "\(error)".contains("--drop-unmarked-weights")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
        o.dropUnmarkedWeights = true
        let manifest = try Embedder.embed(model, key: Self.key, options: o, plan: plan, to: dir + "/out", overwrite: false)
        #expect(!FileManager.default.fileExists(atPath: dir + "/out/pytorch_model.bin"))
        #expect(manifest.droppedFiles == ["pytorch_model.bin"])
        // Everything else is there, subfolders included, byte for byte, and hashed under its relative path.
        for f in ["config.json", "1_Pooling/config.json", "modules.json", "training_args.bin"] {
            #expect(FileManager.default.contents(atPath: dir + "/out/" + f) == FileManager.default.contents(atPath: dir + "/in/" + f), "\(f)")
            let digest = try #require(manifest.output.first { $0.file == f }, "\(f) not in the manifest")
            #expect(digest.sha256 == (try FileDigest.of(file: dir + "/out/" + f)).sha256)
        }
    }

    @Test("an unreadable file of the model folder is an error naming it, not silently skipped")
    func unreadableAuxiliary() throws {
        do { // root reads everything, so the unreadable file is a link whose target went away
            let dir = Fixtures.temporaryDirectory("aux-dangling")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try FileManager.default.createDirectory(atPath: dir + "/in", withIntermediateDirectories: true)
            try Fixtures.writeSmallModel(to: dir + "/in/model.safetensors")
            Fixtures.write(Array("{}".utf8), to: dir + "/in/vocab.txt")
            try FileManager.default.createSymbolicLink(atPath: dir + "/in/tokenizer.json", withDestinationPath: dir + "/in/vocab.txt")
            let model = try SafetensorsModel(path: dir + "/in")
            try FileManager.default.removeItem(atPath: dir + "/in/vocab.txt")
            #expect {
                try Embedder.embed(model, key: Self.key, options: options(), plan: Embedder.plan(model, options: options()),
                                   to: dir + "/out", overwrite: false)
            } throws: { "\($0)".contains("vocab.txt") || "\($0)".contains("tokenizer.json") }
            #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
        }
    }

    @Test("NaN and Inf weights are left as they are and the rest of the matrix is marked; an all-zero matrix is an error")
    func nonFiniteWeights() throws {
        for dtype in [DType.f32, .bf16] {
            let dir = Fixtures.temporaryDirectory("nan")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            var values = try Fixtures.writeSmallModel(to: dir + "/clean.safetensors", dtype: dtype)
            let name = "layers.0.attn.q_proj.weight"
            values[name]![5] = .nan
            values[name]![77] = .infinity
            values[name]![900] = -.infinity
            let tensors = Fixtures.smallModelShapes.map { n, shape in
                OutputTensor(name: n, dtype: dtype, shape: shape, bytes: FloatConversion.encode(values[n]!, as: dtype))
            }
            try SafetensorsWriter.write(tensors, metadata: nil, to: dir + "/m.safetensors", overwrite: false)
            let model = try SafetensorsModel(path: dir + "/m.safetensors")
            let manifest = try Embedder.embed(model, key: Self.key, options: options(0.03), plan: Embedder.plan(model, options: options(0.03)),
                                              to: dir + "/w.safetensors", overwrite: false)
            let record = try #require(manifest.tensors.first { $0.name == name })
            #expect(record.beta > 0 && record.nonFiniteValues == 3, "\(dtype)")
            #expect(abs(record.measuredDelta - 0.03) < 0.003, "\(dtype): \(record.measuredDelta)")
            let marked = try SafetensorsModel(path: dir + "/w.safetensors")
            let w = try marked.floats(of: marked.tensor(named: name)!)
            #expect(w[5].isNaN && w[77] == .infinity && w[900] == -.infinity)
            // Detection: the NaN/Inf count as erased and the tensor still scores.
            let r = try Detector.detect(suspect: marked, reference: nil, key: Self.key, options: DetectOptions())
            let e = try #require(r.tensors.first { $0.name == name })
            #expect(e.z.isFinite && e.z > 3 && e.erased == 3, "\(dtype): z \(e.z), erased \(e.erased)")
            #expect(r.combinedZ.isFinite && r.detected)
            let informed = try Detector.detect(suspect: marked, reference: SafetensorsModel(path: dir + "/clean.safetensors"),
                                               key: Self.key, options: DetectOptions())
            #expect(informed.combinedZ.isFinite && informed.detected)
        }
        let dir = Fixtures.temporaryDirectory("zero")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var shapes = Fixtures.smallModelShapes
        shapes.append(("layers.0.attn.o_proj.weight", [256, 256]))
        var values = try Fixtures.writeSmallModel(to: dir + "/m0.safetensors", shapes: shapes)
        values["layers.0.attn.o_proj.weight"] = [Float](repeating: 0, count: 65536)
        try SafetensorsWriter.write(shapes.map { OutputTensor(name: $0.0, dtype: .f32, shape: $0.1, bytes: FloatConversion.encode(values[$0.0]!, as: .f32)) },
                                    metadata: nil, to: dir + "/m.safetensors", overwrite: false)
        let model = try SafetensorsModel(path: dir + "/m.safetensors")
        #expect {
            try Embedder.embed(model, key: Self.key, options: options(), plan: Embedder.plan(model, options: options()),
                               to: dir + "/w.safetensors", overwrite: false)
        } throws: { "\($0)".contains("layers.0.attn.o_proj.weight") && "\($0)".contains("every value is zero") && "\($0)".contains("--exclude") }
        #expect(!FileManager.default.fileExists(atPath: dir + "/w.safetensors"))
    }

    @Test("a NaN planted in a marked bf16 matrix does not blank its evidence (streamed in-place path)")
    func plantedNaN() throws {
        let dir = Fixtures.temporaryDirectory("planted")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/m.safetensors", dtype: .bf16)
        let model = try SafetensorsModel(path: dir + "/m.safetensors")
        try Embedder.embed(model, key: Self.key, options: options(0.03), plan: Embedder.plan(model, options: options(0.03)),
                           to: dir + "/w.safetensors", overwrite: false)
        let marked = try SafetensorsModel(path: dir + "/w.safetensors")
        let clean = try Detector.detect(suspect: marked, reference: nil, key: Self.key, options: DetectOptions())
        try ModelWriter.write(like: marked, to: dir + "/p.safetensors", overwrite: false) { t in
            guard t.name == "embed_tokens.weight" else { return nil }
            var v = try marked.floats(of: t)
            v[10] = .nan
            return OutputTensor(name: t.name, dtype: t.dtype, shape: t.shape, bytes: FloatConversion.encode(v, as: t.dtype))
        }
        let poisoned = try Detector.detect(suspect: SafetensorsModel(path: dir + "/p.safetensors"), reference: nil, key: Self.key, options: DetectOptions())
        let a = try #require(clean.tensors.first { $0.name == "embed_tokens.weight" })
        let b = try #require(poisoned.tensors.first { $0.name == "embed_tokens.weight" })
        #expect(b.erased == 1 && abs(b.z - a.z) < 0.05 * abs(a.z), "z \(a.z) → \(b.z)")
        #expect(poisoned.detected == clean.detected && poisoned.combinedZ.isFinite)
    }

    @Test("combine refuses cherry-picked parts, recomputes weights from shapes, and states accepted partial coverage")
    func cherryPicking() throws {
        let dir = Fixtures.temporaryDirectory("cherry")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var shapes: [(String, [Int])] = []
        for l in 0..<12 { shapes.append(("layers.\(l).attn.q_proj.weight", [256, 256])) }
        try Fixtures.writeSmallModel(to: dir + "/m.safetensors", shapes: shapes)
        let model = try SafetensorsModel(path: dir + "/m.safetensors")
        let reports = try (0..<12).map { i -> DetectionReport in
            var o = DetectOptions(); o.part = ReportPart(index: i, count: 12)
            let r = try Detector.detect(suspect: model, reference: nil, key: Self.key, options: o)
            return try JSONDecoder().decode(DetectionReport.self, from: JSONEncoder().encode(r))
        }
        #expect(reports.allSatisfy { $0.tensors.count == 1 && $0.selectedTensors?.count == 12 && $0.rank == Carriers.defaultRank })
        let whole = try DetectionReport.combining(reports)
        #expect(whole.partialCoverage == nil)
        // The cherry-picker keeps only the positive scores.
        let picked = reports.filter { $0.tensors[0].z > 0 }
        #expect(picked.count < 12)
        #expect { try DetectionReport.combining(picked) } throws: { "\($0)".contains("of the 12 selected tensors") && "\($0)".contains("--allow-partial") }
        let accepted = try DetectionReport.combining(picked, allowPartial: true)
        #expect(accepted.partialCoverage == true && accepted.combinedZ > whole.combinedZ)
        // A report that inflates a tensor's weight is refused.
        var forged = reports
        forged[0].tensors[0].weight *= 10
        #expect { try DetectionReport.combining(forged) } throws: { "\($0)".contains("weights are fixed by shapes") }
        // Reports of different selections (or from separate files) do not combine by default.
        var other = DetectOptions(); other.selection = TensorSelection(exclude: ["layers.0.*"])
        let excluded = try Detector.detect(suspect: model, reference: nil, key: Self.key, options: other)
        #expect(throws: WatermarkError.self) { try DetectionReport.combining([excluded, reports[0]]) }
    }

    @Test("a key is written 0600 from its first byte: the temporary file is 0600 before the rename")
    func keyPermissions() throws {
        let dir = Fixtures.temporaryDirectory("keymode")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let writer = try AtomicFileWriter(destination: dir + "/k.key", overwrite: false, mode: 0o600)
        try writer.write(Array("secret".utf8))
        let temporary = try #require(try FileManager.default.contentsOfDirectory(atPath: dir).first { $0.hasPrefix(".k.key.tmp-") })
        #expect((try FileManager.default.attributesOfItem(atPath: dir + "/" + temporary)[.posixPermissions] as? Int) == 0o600)
        try writer.commit()
        #expect((try FileManager.default.attributesOfItem(atPath: dir + "/k.key")[.posixPermissions] as? Int) == 0o600)
        try Self.key.save(to: dir + "/owner.key")
        #expect((try FileManager.default.attributesOfItem(atPath: dir + "/owner.key")[.posixPermissions] as? Int) == 0o600)
        #expect(throws: TensorIOError.self) { try Self.key.save(to: dir + "/owner.key") }
        #expect(try WatermarkKey.load(from: dir + "/owner.key").id == Self.key.id)
    }
}

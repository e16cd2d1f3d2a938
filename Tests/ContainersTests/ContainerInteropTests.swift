import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// Checkpoints written by the Python oracles (the torch.save zip layout, NumPy's savez/savez_compressed, Meta's
/// consolidated shards) read back bit-identical to the safetensors they came from, and detected at the same Z.
@Suite("PyTorch, Meta and NumPy checkpoints from the Python oracles", .serialized,
       .enabled(if: Fixtures.oraclesAvailable && Fixtures.miniLMAvailable, "Python oracle venv or MiniLM not installed (make venv model)"))
struct ContainerInteropTests {
    static let torchLayout = Fixtures.packageRoot + "/scripts/oracles/torch_layout.py"

    /// One marked MiniLM shared by the tests of this suite (embedding takes a second or two).
    static let marked: (dir: String, key: String, original: String, marked: String) = {
        let dir = Fixtures.temporaryDirectory("containers")
        let key = dir + "/k.key", out = dir + "/marked.safetensors"
        _ = try! Fixtures.weightmark(["keygen", "--out", key])
        let r = try! Fixtures.weightmark(["embed", Fixtures.miniLM!, "--key", key, "--out", out, "--no-release", "--quiet"])
        precondition(r.status == 0, r.stderr)
        return (dir, key, Fixtures.miniLM!, out)
    }()

    static func z(_ suspect: String, key: String, reference: String? = nil) throws -> Double {
        var args = ["detect", suspect, "--key", key, "--json", "--quiet"]
        if let reference { args += ["--reference", reference] }
        let r = try Fixtures.weightmark(args)
        #expect(r.status == 0 || r.status == 1, "detect \(suspect): \(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        return json["combinedZ"] as! Double
    }

    /// Every tensor of `a` decodes to exactly the values of the same-named tensor of `b`.
    static func expectSameTensors(_ a: any TensorSource, _ b: any TensorSource, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(Set(a.sourceTensors.map(\.name)) == Set(b.sourceTensors.map(\.name)), sourceLocation: sourceLocation)
        for t in b.sourceTensors where t.isFloating {
            let other = try #require(a.sourceTensor(named: t.name), sourceLocation: sourceLocation)
            #expect(other.shape == t.shape, "\(t.name)", sourceLocation: sourceLocation)
            let x = try a.decodeFloats(named: t.name), y = try b.decodeFloats(named: t.name)
            #expect(x.map(\.bitPattern) == y.map(\.bitPattern), "\(t.name) differs", sourceLocation: sourceLocation)
        }
    }

    @Test("torch.save layout (aligned; unaligned + ZIP64 + transposed view + {'model': …} wrapper) reads bit-identical and detects at the safetensors Z",
          arguments: [[String](), ["--no-align", "--zip64", "--transpose", "encoder.layer.0.attention.self.query.weight",
                                   "encoder.layer.3.output.dense.weight", "--wrap", "model"]])
    func pytorchMiniLM(options: [String]) throws {
        let m = Self.marked
        let bin = m.dir + "/pytorch_model-\(options.count).bin"
        _ = try Fixtures.runPython("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
                                   arguments: [Self.torchLayout, "from-safetensors", m.marked, bin] + options)
        let source = try openTensorSource(path: bin)
        #expect(source is PyTorchCheckpoint)
        try Self.expectSameTensors(source, try SafetensorsModel(path: m.marked))
        let (blindST, blindPT) = (try Self.z(m.marked, key: m.key), try Self.z(bin, key: m.key))
        let (informedST, informedPT) = (try Self.z(m.marked, key: m.key, reference: m.original),
                                        try Self.z(bin, key: m.key, reference: m.original))
        #expect(blindST > 15 && informedST > 100)
        #expect(abs(blindPT - blindST) <= 0.01 * blindST)
        #expect(abs(informedPT - informedST) <= 0.01 * informedST)
        // Any mix of formats between suspect and reference.
        // A Hugging Face folder holding only pytorch_model.bin opens as that checkpoint.
        let folder = m.dir + "/hf-\(options.count)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: bin, toPath: folder + "/pytorch_model.bin")
        #expect(try openTensorSource(path: folder) is PyTorchCheckpoint)
        let mixed = try Self.z(m.marked, key: m.key, reference: bin)
        #expect(abs(mixed) < 6, "the marked model against itself as reference leaves no residual mark")
    }

    @Test("a Hugging Face folder of PyTorch shards (pytorch_model.bin.index.json) reads as one model and detects at the safetensors Z")
    func shardedPyTorch() throws {
        let m = Self.marked
        let folder = m.dir + "/sharded-bin"
        _ = try Fixtures.runPython("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
                                   arguments: [Self.torchLayout, "from-safetensors", m.marked, folder, "--shards", "3"])
        let source = try #require(try openTensorSource(path: folder) as? PyTorchShardedModel)
        #expect(source.shards.count == 3)
        try Self.expectSameTensors(source, try SafetensorsModel(path: m.marked))
        let blindST = try Self.z(m.marked, key: m.key), informedST = try Self.z(m.marked, key: m.key, reference: m.original)
        #expect(abs(try Self.z(folder, key: m.key) - blindST) <= 0.01 * blindST)
        #expect(abs(try Self.z(folder, key: m.key, reference: m.original) - informedST) <= 0.01 * informedST)
    }

    @Test("numpy.savez and savez_compressed archives read bit-identical and detect at the safetensors Z")
    func numpyArchives() throws {
        let m = Self.marked
        _ = try Fixtures.runPython("""
        import sys, numpy as np
        from safetensors.numpy import load_file
        d = load_file(sys.argv[1])
        np.savez(sys.argv[2], **d)
        np.savez_compressed(sys.argv[3], **d)
        np.save(sys.argv[4], d['encoder.layer.0.attention.self.query.weight'])
        """, arguments: [m.marked, m.dir + "/m.npz", m.dir + "/mc.npz", m.dir + "/encoder.layer.0.attention.self.query.weight.npy"])
        let reference = try SafetensorsModel(path: m.marked)
        let blindST = try Self.z(m.marked, key: m.key), informedST = try Self.z(m.marked, key: m.key, reference: m.original)
        for file in ["m.npz", "mc.npz"] {
            let source = try openTensorSource(path: m.dir + "/" + file)
            #expect((source as? NumPyArrays)?.container == .npz)
            try Self.expectSameTensors(source, reference)
            #expect(abs(try Self.z(m.dir + "/" + file, key: m.key) - blindST) <= 0.01 * blindST)
            #expect(abs(try Self.z(m.dir + "/" + file, key: m.key, reference: m.original) - informedST) <= 0.01 * informedST)
        }
        let compressed = try #require(try openTensorSource(path: m.dir + "/mc.npz") as? NumPyArrays)
        #expect(compressed.arrays.allSatisfy { $0.entry?.method == .deflated })
        let npy = try openTensorSource(path: m.dir + "/encoder.layer.0.attention.self.query.weight.npy")
        #expect(npy.sourceTensors.map(\.name) == ["encoder.layer.0.attention.self.query.weight"])
        #expect(try npy.decodeFloats(named: "encoder.layer.0.attention.self.query.weight")
                == reference.decodeFloats(named: "encoder.layer.0.attention.self.query.weight"))
    }

    @Test("several tensors viewing one storage at different offsets read as their own slices")
    func sharedStorage() throws {
        let m = Self.marked
        let bin = m.dir + "/shared.bin"
        let name = "encoder.layer.1.intermediate.dense.weight"
        _ = try Fixtures.runPython("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
                                   arguments: [Self.torchLayout, "from-safetensors", m.marked, bin, "--share", name])
        let pt = try #require(try openTensorSource(path: bin) as? PyTorchCheckpoint)
        let top = try #require(pt.tensor(named: name + ".top")), bottom = try #require(pt.tensor(named: name + ".bottom"))
        #expect(top.storage == bottom.storage)
        #expect(bottom.view.storageOffset == 768 * 384)
        let whole = try SafetensorsModel(path: m.marked).decodeFloats(named: name)
        #expect(try pt.decodeFloats(named: name + ".top") == Array(whole[0..<(768 * 384)]))
        #expect(try pt.decodeFloats(named: name + ".bottom") == Array(whole[(768 * 384)...]))
    }

    @Test("a synthetic Llama in Meta's layout, split over 2 and 4 consolidated.NN.pth files, merges to the Hugging Face tensors and detects at the same Z",
          arguments: [2, 4])
    func metaLayout(shards: Int) throws {
        let m = Self.marked
        let hf = m.dir + "/llama-\(shards)", marked = m.dir + "/llama-\(shards)-marked", meta = m.dir + "/meta-\(shards)"
        var r = try Fixtures.weightmark(["synth", "--params", "14M", "--hidden", "512", "--ffn", "1376", "--vocab", "2000", "--layers", "4",
                                         "--heads", "8", "--kv-heads", "4", "--dtype", "bf16", "--out", hf, "--quiet", "--force"])
        #expect(r.status == 0, "\(r.stderr)")
        r = try Fixtures.weightmark(["embed", hf, "--key", m.key, "--out", marked, "--no-release", "--quiet", "--force"])
        #expect(r.status == 0, "\(r.stderr)")
        _ = try Fixtures.runPython("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
                                   arguments: [Self.torchLayout, "meta", marked, meta, "--shards", String(shards)])
        let source = try #require(try openTensorSource(path: meta) as? MetaConsolidatedModel)
        #expect(source.shards.count == shards)
        try Self.expectSameTensors(source, try SafetensorsModel(path: marked))
        let blindST = try Self.z(marked, key: m.key), blindMeta = try Self.z(meta, key: m.key)
        let informedST = try Self.z(marked, key: m.key, reference: hf), informedMeta = try Self.z(meta, key: m.key, reference: hf)
        #expect(blindST > 8)
        #expect(abs(blindMeta - blindST) <= 0.01 * blindST)
        #expect(abs(informedMeta - informedST) <= 0.01 * informedST)
        // Informed detection with the Meta folder as the reference and the HF copy as suspect.
        #expect(abs(try Self.z(marked, key: m.key, reference: meta)) < 6)
    }

    @Test("attack reads a PyTorch checkpoint and writes safetensors the detector still reads")
    func attackFromPyTorch() throws {
        let m = Self.marked
        let bin = m.dir + "/attack-input.bin", out = m.dir + "/attacked.safetensors"
        _ = try Fixtures.runPython("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
                                   arguments: [Self.torchLayout, "from-safetensors", m.marked, bin])
        let r = try Fixtures.weightmark(["attack", bin, "--out", out, "--attack", "int8", "--force", "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let attacked = try SafetensorsModel(path: out)
        #expect(attacked.tensors.count == 104)
        #expect(try Self.z(out, key: m.key) > 15)
    }
}

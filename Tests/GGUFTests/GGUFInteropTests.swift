import Conversion
import Foundation
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport


/// Interop with the PyPI `gguf` package (llama.cpp's Python reference).
@Suite("GGUF interop with the gguf package", .enabled(if: Fixtures.oraclesAvailable, "Python oracle venv not installed"))
struct GGUFInteropTests {
    @Test("files gguf writes: metadata of every type, and every tensor dequantizes bit-identically")
    func readGGUFWritten() throws {
        let dir = Fixtures.temporaryDirectory("gguf-read")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/py.gguf"
        let out = try Fixtures.runPython("""
        import sys, json
        import numpy as np
        import gguf
        from gguf import GGMLQuantizationType as T
        rng = np.random.default_rng(5)
        w = gguf.GGUFWriter(sys.argv[1], "llama")
        w.add_uint8("t.u8", 200); w.add_int8("t.i8", -5); w.add_uint16("t.u16", 60000); w.add_int16("t.i16", -300)
        w.add_uint32("t.u32", 4000000000); w.add_int32("t.i32", -7); w.add_float32("t.f32", 1.5); w.add_bool("t.bool", True)
        w.add_string("t.str", "héllo"); w.add_uint64("t.u64", 2**40); w.add_int64("t.i64", -2**40); w.add_float64("t.f64", 0.25)
        w.add_array("t.arr", [1, 2, 3]); w.add_array("t.strs", ["a", "bc"]); w.add_array("t.nested", [[1, 2], [3]])
        deq = {}
        x = rng.standard_normal((4, 256)).astype(np.float32) * 0.05
        for qt in [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]:
            q = gguf.quants.quantize(x, qt) if qt != T.F32 else x
            w.add_tensor("w." + qt.name, q, raw_dtype=qt)
            deq[qt.name] = gguf.quants.dequantize(q, qt).astype(np.float32).tobytes().hex()
        for qt in [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]:
            size = gguf.GGML_QUANT_SIZES[qt][1]
            raw = rng.integers(0, 256, size=(2, 2 * size), dtype=np.uint8)
            # keep the f16 scales finite and small: zero the high byte of every f16 field
            q = raw.reshape(2, 2, size).copy()
            if qt in (T.Q2_K,): q[..., -1] = 0x1C; q[..., -3] = 0x1C
            elif qt in (T.Q3_K, T.Q6_K): q[..., -1] = 0x1C
            else: q[..., 1] = 0x1C; q[..., 3] = 0x1C
            q = q.reshape(2, 2 * size)
            w.add_tensor("k." + qt.name, q, raw_dtype=qt)
            deq[qt.name] = gguf.quants.dequantize(q, qt).astype(np.float32).tobytes().hex()
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        print(json.dumps(deq))
        """, arguments: [path])
        let expected = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: String]
        let f = try GGUFFile(path: path)
        #expect(f.value("t.u8") == .uint8(200))
        #expect(f.value("t.i8") == .int8(-5))
        #expect(f.value("t.u16") == .uint16(60000))
        #expect(f.value("t.i16") == .int16(-300))
        #expect(f.value("t.u32") == .uint32(4_000_000_000))
        #expect(f.value("t.i32") == .int32(-7))
        #expect(f.value("t.f32") == .float32(1.5))
        #expect(f.value("t.bool") == .bool(true))
        #expect(f.value("t.str") == .string("héllo"))
        #expect(f.value("t.u64") == .uint64(1 << 40))
        #expect(f.value("t.i64") == .int64(-(1 << 40)))
        #expect(f.value("t.f64") == .float64(0.25))
        #expect(f.value("t.strs") == .array(elementType: 8, values: [.string("a"), .string("bc")]))
        guard case let .array(9, nested)? = f.value("t.nested") else { Issue.record("nested array: \(String(describing: f.value("t.nested")))"); return }
        #expect(nested.count == 2)
        #expect(f.value("general.architecture") == .string("llama"))
        for (name, hex) in expected {
            let t = try #require(f.tensor(named: (name.hasSuffix("_K") ? "k." : "w.") + name), "\(name)")
            #expect(try f.floats(of: t) == Fixtures.floats(fromHex: hex), "\(name)")
        }
    }

    @Test("convert output loads in gguf's reader with the same names, types, shapes and values")
    func convertedLoadsInGGUF() throws {
        let dir = Fixtures.temporaryDirectory("gguf-conv")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallLlama(to: dir + "/llama")
        let model = try SafetensorsModel(path: dir + "/llama")
        for type in [GGMLType.q8_0, .q4_K, .q6_K, .f16] {
            let path = dir + "/m-\(type.name).gguf"
            _ = try GGUFConverter.convert(model, type: type, to: path, overwrite: false)
            let ours = try GGUFFile(path: path)
            let out = try Fixtures.runPython("""
            import sys, json
            import numpy as np
            import gguf
            r = gguf.GGUFReader(sys.argv[1])
            res = {"arch": bytes(r.fields["general.architecture"].parts[-1]).decode(),
                   "heads": int(r.fields["llama.attention.head_count"].parts[-1][0]),
                   "tensors": {}}
            for t in r.tensors:
                d = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
                res["tensors"][t.name] = {"type": t.tensor_type.name, "shape": [int(x) for x in reversed(t.shape)], "hex": d.tobytes().hex()}
            print(json.dumps(res))
            """, arguments: [path])
            let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
            #expect(json["arch"] as? String == "llama")
            #expect(json["heads"] as? Int == 8)
            let tensors = json["tensors"] as! [String: [String: Any]]
            #expect(tensors.count == ours.tensors.count)
            for t in ours.tensors {
                let theirs = try #require(tensors[t.name], "\(t.name)")
                #expect(theirs["type"] as? String == t.type.name)
                #expect(theirs["shape"] as? [Int] == t.shape, "\(t.name)")
                #expect(Fixtures.floats(fromHex: theirs["hex"] as! String) == (try ours.floats(of: t)), "\(t.name)")
            }
        }
    }

    @Test("Llama q/k rows are permuted exactly as llama.cpp's converter does, and undone on reading")
    func rotaryPermutation() throws {
        let dir = Fixtures.temporaryDirectory("gguf-rope")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallLlama(to: dir + "/llama")
        let model = try SafetensorsModel(path: dir + "/llama")
        _ = try GGUFConverter.convert(model, type: .f16, to: dir + "/m.gguf", overwrite: false)
        // The oracle applies convert_hf_to_gguf's permute() with numpy to the original weights.
        let out = try Fixtures.runPython("""
        import sys, json
        import numpy as np
        import gguf
        from safetensors.numpy import load_file
        hf = load_file(sys.argv[1] + "/model.safetensors")
        def permute(w, n_head, n_head_kv):
            if n_head_kv is not None and n_head != n_head_kv:
                n_head = n_head_kv
            return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        r = gguf.GGUFReader(sys.argv[2])
        got = {t.name: np.asarray(t.data).astype(np.float32) for t in r.tensors}
        q = permute(hf["model.layers.1.self_attn.q_proj.weight"], 8, 8).astype(np.float16).astype(np.float32)
        k = permute(hf["model.layers.1.self_attn.k_proj.weight"], 8, 4).astype(np.float16).astype(np.float32)
        print(json.dumps({"q": bool(np.array_equal(q, got["blk.1.attn_q.weight"])), "k": bool(np.array_equal(k, got["blk.1.attn_k.weight"])),
                          "q_moved": bool(not np.array_equal(q, hf["model.layers.1.self_attn.q_proj.weight"].astype(np.float16).astype(np.float32)))}))
        """, arguments: [dir + "/llama", dir + "/m.gguf"])
        #expect(out.contains("\"q\": true") && out.contains("\"k\": true") && out.contains("\"q_moved\": true"), "\(out)")
        // Reading back through GGUFModel restores the Hugging Face layout exactly (F16 round trip aside).
        let g = try GGUFModel(path: dir + "/m.gguf")
        let back = try g.decodeFloats(named: "model.layers.1.self_attn.k_proj.weight")
        let orig = try model.floats(of: model.tensor(named: "model.layers.1.self_attn.k_proj.weight")!).map { Float(Float16($0)) }
        #expect(back == orig)
    }
}

/// Detection directly in GGUF files.
@Suite("Detect in GGUF")
struct GGUFDetectionTests {
    static let key = WatermarkKey(secret: (0..<32).map { UInt8(($0 * 29 + 3) & 0xFF) })

    func mark(_ source: String, _ out: String, delta: Double = 4e-3) throws {
        let model = try SafetensorsModel(path: source)
        var options = EmbedOptions()
        options.strength = .relativeDistortion(delta)
        _ = try Embedder.embed(model, key: Self.key, options: options, plan: Embedder.plan(model, options: options), to: out, overwrite: false)
    }

    @Test("marked MiniLM → GGUF Q8_0 / Q4_0 / Q4_K via convert: detected blind and informed; the unmarked GGUF is not",
          .enabled(if: Fixtures.miniLMAvailable), arguments: [GGMLType.q8_0, .q4_0, .q4_K])
    func miniLM(_ type: GGMLType) throws {
        let minilm = try #require(Fixtures.miniLM)
        let folder = (minilm as NSString).deletingLastPathComponent
        let dir = Fixtures.temporaryDirectory("gguf-minilm")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try mark(folder, dir + "/marked")
        let original = try SafetensorsModel(path: folder)
        _ = try GGUFConverter.convert(try SafetensorsModel(path: dir + "/marked"), type: type, to: dir + "/m.gguf", overwrite: false)
        let gguf = try GGUFModel(path: dir + "/m.gguf")
        #expect(gguf.architecture == .bert)
        let blind = try Detector.detect(suspect: gguf, reference: nil, key: Self.key, options: DetectOptions())
        #expect(blind.detected && blind.log10PValueBound <= -6, "blind Z \(blind.combinedZ)")
        #expect(blind.tensors.count == 38) // the pooler is not converted
        let informed = try Detector.detect(suspect: gguf, reference: original, key: Self.key, options: DetectOptions())
        #expect(informed.detected && informed.combinedZ > blind.combinedZ, "informed Z \(informed.combinedZ)")
        #expect(informed.skipped.contains { $0.name == "pooler.dense.weight" })
        if type == .q4_0 {
            _ = try GGUFConverter.convert(original, type: type, to: dir + "/clean.gguf", overwrite: false)
            let clean = try Detector.detect(suspect: try GGUFModel(path: dir + "/clean.gguf"), reference: nil, key: Self.key, options: DetectOptions())
            #expect(!clean.detected)
        }
    }

    @Test("GGUF files written and quantized by the gguf package itself (Q8_0, Q4_0) are detected",
          .enabled(if: Fixtures.miniLMAvailable && Fixtures.oraclesAvailable), arguments: ["Q8_0", "Q4_0"])
    func oracleWritten(_ type: String) throws {
        let minilm = try #require(Fixtures.miniLM)
        let folder = (minilm as NSString).deletingLastPathComponent
        let dir = Fixtures.temporaryDirectory("gguf-oracle")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try mark(folder, dir + "/marked")
        let marked = try SafetensorsModel(path: dir + "/marked")
        var names: [String: String] = [:]
        for t in marked.tensors { if let g = GGUFArchitecture.bert.ggufName(forHF: t.name) { names[t.name] = g } }
        let map = String(decoding: try JSONSerialization.data(withJSONObject: names), as: UTF8.self)
        _ = try Fixtures.runPython("""
        import sys, json
        import numpy as np
        import gguf
        from safetensors.numpy import load_file
        ts = load_file(sys.argv[1] + "/model.safetensors")
        names = json.loads(sys.argv[3]); qt = gguf.GGMLQuantizationType[sys.argv[4]]
        w = gguf.GGUFWriter(sys.argv[2], "bert")
        w.add_uint32("bert.attention.head_count", 12)
        for hf, g in names.items():
            x = np.ascontiguousarray(ts[hf].astype(np.float32))
            if x.ndim == 2 and x.shape[1] % 32 == 0:
                w.add_tensor(g, gguf.quants.quantize(x, qt), raw_dtype=qt)
            else:
                w.add_tensor(g, x)
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        """, arguments: [dir + "/marked", dir + "/py.gguf", map, type])
        let gguf = try GGUFModel(path: dir + "/py.gguf")
        let blind = try Detector.detect(suspect: gguf, reference: nil, key: Self.key, options: DetectOptions())
        #expect(blind.detected && blind.log10PValueBound <= -6, "blind Z \(blind.combinedZ)")
        let informed = try Detector.detect(suspect: gguf, reference: try SafetensorsModel(path: folder), key: Self.key, options: DetectOptions())
        #expect(informed.detected, "informed Z \(informed.combinedZ)")
    }

    @Test("marked synthetic Llama → GGUF with the q/k permutation → detected; without undoing it, q/k lose the mark")
    func llama() throws {
        let dir = Fixtures.temporaryDirectory("gguf-llama")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallLlama(to: dir + "/llama")
        try mark(dir + "/llama", dir + "/marked", delta: 0.02)
        Fixtures.write(Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/llama/config.json"))), to: dir + "/marked/config.json")
        _ = try GGUFConverter.convert(try SafetensorsModel(path: dir + "/marked"), type: .q8_0, to: dir + "/m.gguf", overwrite: false)
        let gguf = try GGUFModel(path: dir + "/m.gguf")
        #expect(gguf.heads == 8 && gguf.kvHeads == 4)
        let r = try Detector.detect(suspect: gguf, reference: try SafetensorsModel(path: dir + "/llama"), key: Self.key, options: DetectOptions())
        #expect(r.detected)
        let q = try #require(r.tensors.first { $0.name == "model.layers.0.self_attn.q_proj.weight" })
        #expect(q.z > 20, "q_proj z \(q.z)")
        // Control: the raw (still permuted) GGUF rows carry no detectable mark for q_proj.
        let info = try #require(gguf.ggufInfo(named: "model.layers.0.self_attn.q_proj.weight"))
        let raw = try gguf.file.floats(of: info)
        let carriers = try Carriers.derive(secret: Self.key.secret, tensor: "model.layers.0.self_attn.q_proj.weight", rows: 256, cols: 256)
        let wrong = try Detector.score(name: "q", suspect: raw, reference: nil, rows: 256, cols: 256, carriers: carriers)
        #expect(abs(wrong.z) < 5.3)
    }
}

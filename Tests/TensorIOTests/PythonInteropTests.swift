import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// Interop with the Python `safetensors` library (the venv that `make test` installs).
@Suite("Interop with Python safetensors", .enabled(if: Fixtures.oraclesAvailable, "Python oracle venv not installed (make venv)"))
struct PythonInteropTests {
    static let names = ["plain", "with \"quotes\"", "nön-ascii ✓ 名前", "back\\slash"]

    @Test("Swift writes, Python reads identical bytes, shapes, dtypes and metadata")
    func swiftWritesPythonReads() throws {
        let dir = Fixtures.temporaryDirectory("interop-w")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var tensors: [OutputTensor] = []
        var expected: [String: (dtype: String, shape: [Int], hex: String)] = [:]
        let dtypes: [DType] = [.f32, .f16, .bf16, .f32]
        for (k, name) in Self.names.enumerated() {
            let values = Fixtures.floats(count: 6, seed: UInt64(k + 10))
            let bytes = FloatConversion.encode(values, as: dtypes[k])
            tensors.append(OutputTensor(name: name, dtype: dtypes[k], shape: [2, 3], bytes: bytes))
            expected[name] = (dtypes[k].rawValue, [2, 3], Fixtures.hex(bytes))
        }
        tensors.append(OutputTensor(name: "scalar", dtype: .f32, shape: [], bytes: FloatConversion.encode([2.5], as: .f32)))
        expected["scalar"] = ("F32", [], Fixtures.hex(FloatConversion.encode([2.5], as: .f32)))
        tensors.append(OutputTensor(name: "empty", dtype: .f16, shape: [0, 4], bytes: []))
        expected["empty"] = ("F16", [0, 4], "")
        let path = dir + "/swift.safetensors"
        try SafetensorsWriter.write(tensors, metadata: [("format", "pt"), ("owner", "Ünïcode \"quoted\"")], to: path)

        let out = try Fixtures.runPython("""
        import json, sys
        import numpy as np, ml_dtypes
        from safetensors import safe_open
        res = {}
        with safe_open(sys.argv[1], framework="numpy") as f:
            meta = f.metadata()
            for k in f.keys():
                t = f.get_tensor(k)
                res[k] = {"dtype": str(t.dtype), "shape": list(t.shape), "hex": np.ascontiguousarray(t).tobytes().hex()}
        print(json.dumps({"meta": meta, "tensors": res}))
        """, arguments: [path])
        let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
        #expect(json["meta"] as? [String: String] == ["format": "pt", "owner": "Ünïcode \"quoted\""])
        let got = json["tensors"] as! [String: [String: Any]]
        #expect(Set(got.keys) == Set(expected.keys))
        let numpyName = ["F32": "float32", "F16": "float16", "BF16": "bfloat16"]
        for (name, e) in expected {
            #expect(got[name]?["hex"] as? String == e.hex, "\(name)")
            #expect(got[name]?["shape"] as? [Int] == e.shape, "\(name)")
            #expect(got[name]?["dtype"] as? String == numpyName[e.dtype], "\(name)")
        }
    }

    @Test("Python writes, Swift reads identical values (F32, F16, BF16, odd names, scalar, zero-size)")
    func pythonWritesSwiftReads() throws {
        let dir = Fixtures.temporaryDirectory("interop-r")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/py.safetensors"
        let out = try Fixtures.runPython("""
        import json, sys
        import numpy as np, ml_dtypes
        from safetensors.numpy import save_file
        rng = np.random.default_rng(7)
        names = json.loads(sys.argv[2])
        ts = {}
        for i, (n, dt) in enumerate(zip(names, [np.float32, np.float16, ml_dtypes.bfloat16, np.float32])):
            ts[n] = np.ascontiguousarray(rng.standard_normal((3, 5)).astype(dt))
        ts["scalar"] = np.array(1.25, dtype=np.float32)
        ts["empty"] = np.zeros((0, 2), dtype=ml_dtypes.bfloat16)
        save_file(ts, sys.argv[1], metadata={"k": "v"})
        print(json.dumps({k: v.astype(np.float32).tobytes().hex() for k, v in ts.items()}))
        """, arguments: [path, String(decoding: try JSONSerialization.data(withJSONObject: Self.names), as: UTF8.self)])
        let expected = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: String]
        let f = try SafetensorsFile(path: path)
        #expect(Set(f.tensors.map(\.name)) == Set(expected.keys))
        #expect(f.metadata?.first?.value == "v")
        for t in f.tensors {
            let hex = Fixtures.hex(FloatConversion.encode(try f.floats(of: t), as: .f32))
            #expect(hex == expected[t.name], "\(t.name)")
        }
    }

    @Test("sharded folders interoperate both ways")
    func shardedInterop() throws {
        let dir = Fixtures.temporaryDirectory("interop-s")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pyDir = dir + "/py"
        let out = try Fixtures.runPython("""
        import json, os, sys
        import numpy as np
        from safetensors.numpy import save_file
        d = sys.argv[1]; os.makedirs(d)
        rng = np.random.default_rng(3)
        shards = {"model-00001-of-00002.safetensors": ["a.weight", "b.weight"], "model-00002-of-00002.safetensors": ["c.weight"]}
        wm, total, vals = {}, 0, {}
        for fn, names in shards.items():
            ts = {n: rng.standard_normal((4, 8)).astype(np.float32) for n in names}
            save_file(ts, os.path.join(d, fn), metadata={"format": "pt"})
            for n, t in ts.items():
                wm[n] = fn; total += t.nbytes; vals[n] = t.tobytes().hex()
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, open(os.path.join(d, "model.safetensors.index.json"), "w"), indent=2)
        open(os.path.join(d, "config.json"), "w").write('{"hidden_size": 8}')
        print(json.dumps(vals))
        """, arguments: [pyDir])
        let expected = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: String]
        let model = try SafetensorsModel(path: pyDir)
        #expect(model.layout == .sharded)
        #expect(model.shards.count == 2)
        for t in model.tensors {
            let hex = Fixtures.hex(FloatConversion.encode(try model.floats(of: t), as: .f32))
            #expect(hex == expected[t.name], "\(t.name)")
        }
        let swiftDir = dir + "/swift"
        try ModelWriter.write(like: model, to: swiftDir, overwrite: false) { _ in nil }
        let check = try Fixtures.runPython("""
        import json, os, sys
        from safetensors.numpy import load_file
        d = sys.argv[1]
        idx = json.load(open(os.path.join(d, "model.safetensors.index.json")))
        vals = {}
        for n, fn in idx["weight_map"].items():
            vals[n] = load_file(os.path.join(d, fn))[n].tobytes().hex()
        print(json.dumps({"total": idx["metadata"]["total_size"], "vals": vals, "config": open(os.path.join(d, "config.json")).read()}))
        """, arguments: [swiftDir])
        let result = try JSONSerialization.jsonObject(with: Data(check.utf8)) as! [String: Any]
        #expect(result["vals"] as? [String: String] == expected)
        #expect(result["total"] as? Int == 3 * 4 * 8 * 4)
        #expect(result["config"] as? String == "{\"hidden_size\": 8}")
    }
}

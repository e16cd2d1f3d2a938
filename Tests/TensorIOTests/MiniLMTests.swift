import Crypto
import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// The real model that `make test` fetches (sentence-transformers/all-MiniLM-L6-v2, F32).
@Suite("MiniLM (real model)", .enabled(if: Fixtures.miniLMAvailable, "MiniLM not fetched (make model)"))
struct MiniLMTests {
    @Test("MiniLM has 104 tensors and 22,713,728 elements")
    func counts() throws {
        let model = try SafetensorsModel(path: try #require(Fixtures.miniLM, "run `make model`"))
        #expect(model.tensors.count == 104)
        #expect(model.parameterCount == 22_713_728)
        // 103 F32 weights plus the I64 `embeddings.position_ids` buffer.
        #expect(model.tensors.filter { $0.dtype == .f32 }.count == 103)
        #expect(model.tensor(named: "embeddings.position_ids")?.dtype == .i64)
        let t = try #require(model.tensor(named: "encoder.layer.0.attention.self.query.weight"))
        #expect(t.shape == [384, 384])
    }

    @Test("every tensor decodes bit-identically to numpy's reading", .enabled(if: Fixtures.oraclesAvailable))
    func bitIdenticalToNumpy() throws {
        let path = try #require(Fixtures.miniLM)
        let out = try Fixtures.runPython("""
        import hashlib, json, sys
        import numpy as np
        from safetensors.numpy import load_file
        ts = load_file(sys.argv[1])
        print(json.dumps({k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in ts.items() if v.dtype == np.float32}))
        """, arguments: [path])
        let expected = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: String]
        let model = try SafetensorsModel(path: path)
        #expect(expected.count == 103)
        for t in model.tensors where t.dtype.isSupportedFloat {
            let floats = try model.floats(of: t)
            let digest = floats.withUnsafeBytes { SHA256.hash(data: $0) }.map { String(format: "%02x", $0) }.joined()
            #expect(digest == expected[t.name], "\(t.name)")
        }
    }
}

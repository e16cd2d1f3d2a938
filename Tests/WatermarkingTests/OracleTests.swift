import Foundation
import LinearAlgebra
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport

/// Independent implementations of the v1 format, run inside `make test`: Python `cryptography`'s HKDF for the
/// subkeys, and `Benchmarks/numpy_peer.py` (the whole algorithm in numpy: HKDF, ChaCha20 keystream, Box–Muller,
/// numpy's Householder QR, projection and scoring) for the carriers and the per-tensor evidence of a model.
@Suite("Independent oracles for the v1 format", .enabled(if: Fixtures.oraclesAvailable, "Python oracle venv not installed (make venv)"))
struct OracleTests {
    static let peer = Fixtures.packageRoot + "/Benchmarks/numpy_peer.py"

    static func runPeer(_ arguments: [String]) throws -> [String: Any] {
        let python = try #require(Fixtures.python, "no Python oracle: run `make venv` or set WEIGHTMARK_PYTHON")
        let out = try Fixtures.run(python, [peer] + arguments)
        return try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any], "peer printed \(out)")
    }

    @Test("HKDF-SHA256 subkeys equal Python cryptography's for 60 secrets, purposes, names and shapes")
    func hkdfSubkeys() throws {
        var rng = SplitMix64(seed: 0x4B_44_46)
        let purposes = ["carrier-A", "carrier-B", "pattern-S"]
        let names = ["model.layers.0.self_attn.q_proj.weight", "embeddings.word_embeddings.weight", "nön-ascii ✓ 名前.weight",
                     "a|b", "", "x"]
        let shapes = [[384, 384], [30522, 384], [1, 1], [4096, 11008], [7], [2, 3, 4]]
        var cases: [(secret: [UInt8], purpose: String, name: String, shape: [Int])] = []
        for k in 0..<60 {
            let secret = (0..<32).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            cases.append((secret, purposes[k % 3], names[k % names.count], shapes[(k / 2) % shapes.count]))
        }
        let json = try JSONSerialization.data(withJSONObject: cases.map {
            ["secret": Fixtures.hex($0.secret), "purpose": $0.purpose, "name": $0.name, "shape": $0.shape] as [String: Any]
        })
        // The info string is built here from the documented format, not taken from the Swift code.
        let out = try Fixtures.runPython("""
        import json, sys
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
        for c in json.loads(sys.argv[1]):
            info = ("weightmark/v1|%s|%s|%s" % (c["purpose"], c["name"], "x".join(str(d) for d in c["shape"]))).encode("utf-8")
            key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"weightmark/v1/hkdf-salt", info=info).derive(bytes.fromhex(c["secret"]))
            print(key.hex())
        """, arguments: [String(decoding: json, as: UTF8.self)])
        let expected = out.split(separator: "\n").map(String.init)
        #expect(expected.count == cases.count)
        for (c, want) in zip(cases, expected) {
            let got = Fixtures.hex(KeyedGenerator.subkey(secret: c.secret, info: KeyedGenerator.info(purpose: c.purpose, tensor: c.name, shape: c.shape)))
            #expect(got == want, "\(c.purpose) \(c.name) \(c.shape)")
        }
    }

    /// Largest |a − b| over two equally long vectors.
    static func maxAbsDifference(_ a: [Float], _ b: [Double]) -> Double {
        precondition(a.count == b.count)
        return zip(a, b).map { abs(Double($0) - $1) }.max() ?? 0
    }

    @Test("carriers A, B and pattern S equal numpy_peer's on the Cholesky and the Householder path",
          arguments: [("peer.tall", 512, 256), ("householder.both", 100, 48), ("householder.a", 40, 300), ("householder.b", 300, 64)])
    func carriers(_ name: String, _ rows: Int, _ cols: Int) throws {
        let secret = (0..<32).map { UInt8(0xA0 ^ $0) }
        let c = try Carriers.derive(secret: secret, tensor: name, rows: rows, cols: cols)
        let peer = try Self.runPeer(["carriers", Fixtures.hex(secret), name, String(rows), String(cols)])
        let a = try #require(peer["a"] as? [[Double]]), b = try #require(peer["b"] as? [[Double]]), s = try #require(peer["s"] as? [[Double]])
        #expect(a.count == rows && a.first?.count == c.a.cols && b.count == cols && b.first?.count == c.b.cols)
        #expect(c.s.storage == s.flatMap { $0.map(Float.init) }, "pattern S differs")
        let da = Self.maxAbsDifference(c.a.storage, a.flatMap { $0 }), db = Self.maxAbsDifference(c.b.storage, b.flatMap { $0 })
        // Orthonormal columns have entries of size ~1/sqrt(rows); float32 QR of a 32-column Gaussian agrees to ~1e-6.
        #expect(da <= 2e-5 && db <= 2e-5, "\(name) \(rows)×\(cols): max |ΔA| \(da), max |ΔB| \(db)")
        print("oracle carriers \(name) \(rows)×\(cols): max |ΔA| \(da), max |ΔB| \(db)")
    }

    @Test("per-tensor z, ⟨Y,S⟩, ‖Y‖, erasures and combined Z of a small model equal numpy_peer's, blind and informed")
    func modelScores() throws {
        let dir = Fixtures.temporaryDirectory("oracle-z")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Every tensor of the small model plus two narrow ones whose carriers take the Householder path.
        let shapes = Fixtures.smallModelShapes + [("layers.0.narrow_out.weight", [64, 1024]), ("layers.0.narrow_in.weight", [1024, 64])]
        try Fixtures.writeSmallModel(to: dir + "/original.safetensors", seed: 3, shapes: shapes)
        let key = WatermarkKey(secret: (0..<32).map { UInt8(($0 * 11 + 1) & 0xFF) })
        Fixtures.write(try key.fileContents(), to: dir + "/owner.key")
        let original = try SafetensorsModel(path: dir + "/original.safetensors")
        var options = EmbedOptions()
        options.format = .v1 // numpy_peer implements format v1
        options.strength = .relativeDistortion(4e-3)
        _ = try Embedder.embed(original, key: key, options: options, plan: Embedder.plan(original, options: options),
                               to: dir + "/marked.safetensors", overwrite: false)
        // A copy with 30% of every matrix pruned, so informed detection has erasures to mask.
        let marked = try SafetensorsModel(path: dir + "/marked.safetensors")
        try ModelWriter.write(like: marked, to: dir + "/pruned.safetensors", overwrite: false) { t in
            guard t.shape.count == 2 else { return nil }
            var w = try marked.floats(of: t)
            let threshold = w.map(abs).sorted()[Int(0.3 * Double(w.count))]
            for i in w.indices where abs(w[i]) < threshold { w[i] = 0 }
            return OutputTensor(name: t.name, dtype: t.dtype, shape: t.shape, bytes: FloatConversion.encode(w, as: t.dtype))
        }
        var worstZ = 0.0, worstRelative = 0.0
        for (suspect, reference) in [("marked", nil), ("marked", "original"), ("pruned", "original"), ("original", nil)] as [(String, String?)] {
            let label = "\(suspect)\(reference.map { " against \($0)" } ?? " blind")"
            let report = try Detector.detect(suspect: openTensorSource(path: dir + "/\(suspect).safetensors"),
                                             reference: reference.map { try openTensorSource(path: dir + "/\($0).safetensors") },
                                             key: key, options: v1Detection)
            let peer = try Self.runPeer(["score", dir + "/\(suspect).safetensors", dir + "/owner.key"]
                                        + (reference.map { [dir + "/\($0).safetensors"] } ?? []))
            let rows = try #require(peer["tensors"] as? [[String: Any]])
            #expect(rows.map { $0["name"] as? String }.sorted { ($0 ?? "") < ($1 ?? "") } == report.tensors.map(\.name).sorted().map { Optional($0) },
                    "\(label): selections differ")
            for row in rows {
                let name = try #require(row["name"] as? String)
                let t = try #require(report.tensors.first { $0.name == name }, "\(label): \(name) missing")
                let z = try #require(row["z"] as? Double), corr = try #require(row["correlation"] as? Double)
                let norm = try #require(row["norm"] as? Double), erased = try #require(row["erased"] as? Int)
                #expect(t.erased == erased, "\(label) \(name): erased \(t.erased) vs \(erased)")
                #expect(abs(t.weight - (try #require(row["weight"] as? Double))) <= 1e-9 * t.weight)
                // Float32 products summed in another order: z agrees to ~1e-5 of its scale.
                let dz = abs(t.z - z)
                #expect(dz <= 1e-3 * max(1, abs(z)), "\(label) \(name): z \(t.z) vs \(z)")
                #expect(abs(t.norm - norm) <= 1e-3 * norm, "\(label) \(name): ‖Y‖ \(t.norm) vs \(norm)")
                #expect(abs(t.correlation - corr) <= 1e-3 * max(norm, abs(corr)), "\(label) \(name): ⟨Y,S⟩ \(t.correlation) vs \(corr)")
                worstZ = max(worstZ, dz)
                worstRelative = max(worstRelative, dz / max(1e-300, abs(z)))
            }
            let peerZ = try #require(peer["combinedZ"] as? Double)
            #expect(abs(report.combinedZ - peerZ) <= 1e-3 * max(1, abs(peerZ)), "\(label): Z \(report.combinedZ) vs \(peerZ)")
            print("oracle Z \(label): weightmark \(report.combinedZ), numpy peer \(peerZ), |ΔZ| \(abs(report.combinedZ - peerZ))")
        }
        print("oracle per-tensor z: max |Δz| \(worstZ), max relative \(worstRelative)")
    }
}

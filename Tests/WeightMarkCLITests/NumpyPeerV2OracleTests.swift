import Crypto
import Foundation
import Testing
import Watermarking
import WeightMarkTestSupport

/// `Benchmarks/numpy_peer_v2.py` implements format v2 blind detection from docs/FORMAT.md alone (carriers, ChaCha20
/// patterns, tiles, hypotheses, pilot rules, pooled statistic). If the page were not precise enough, its Z would differ.
@Suite("Format v2 reproduced from docs/FORMAT.md by an independent numpy implementation",
       .enabled(if: Fixtures.oraclesAvailable && Fixtures.miniLMAvailable, "Python oracle venv or MiniLM not installed (make venv, make model)"))
struct NumpyPeerV2OracleTests {
    static let peer = Fixtures.packageRoot + "/Benchmarks/numpy_peer_v2.py"

    static func z(_ json: String) throws -> Double {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any], "not JSON: \(json)")
        return try #require(object["combinedZ"] as? Double)
    }

    @Test("MiniLM marked for a release: the peer's Z equals weightmark's to 4 decimals, for the release key and for unrelated keys")
    func miniLM() throws {
        let python = try #require(Fixtures.python, "no Python oracle: run `make venv` or set WEIGHTMARK_PYTHON")
        let model = try #require(Fixtures.miniLM, "MiniLM missing: run `make model` or set WEIGHTMARK_MINILM")
        let dir = Fixtures.temporaryDirectory("peer-v2")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let marked = dir + "/marked.safetensors", opening = marked + ".opening.json"
        for args in [["keygen", "--out", dir + "/owner.key"], ["embed", model, "--key", dir + "/owner.key", "--out", marked, "--release", "peer", "-q"]] {
            let r = try Fixtures.weightmark(args)
            #expect(r.status == 0, "\(args[0]): \(r.stderr)")
        }
        // Unrelated keys (H0: Z near 0) make the pilots pick other readings: with these fixed keys, slices and a fused
        // transposed split (2), transposition for most shapes (3), and slices of both orientations (9).
        var cases = [(["--opening", opening], opening)]
        for i in [2, 3, 9] {
            let path = dir + "/h\(i).key"
            try WatermarkKey(secret: Array(SHA256.hash(data: Array("peer h0 key \(i)".utf8)))).save(to: path)
            // The key itself only (no default release ids): the peer scores that one key.
            cases.append((["--key", path, "--enumerate-releases", "0"], path))
        }
        var readings = Set<String>()
        for (detectArgs, keyFile) in cases {
            let swift = try Fixtures.weightmark(["detect", marked, "--format", "v2", "--json", "-q"] + detectArgs)
            #expect(swift.status == 0 || swift.status == 1, "\(swift.stderr)")
            let ours = try Self.z(swift.stdout)
            let theirs = try Self.z(try Fixtures.run(python, [Self.peer, "score", marked, keyFile]))
            #expect(abs(ours - theirs) < 5e-5, "\(keyFile): weightmark Z \(ours), numpy peer Z \(theirs)")
            if keyFile == opening { #expect(ours > 15, "marked MiniLM scored only \(ours)") }
            let report = try #require(try JSONSerialization.jsonObject(with: Data(swift.stdout.utf8)) as? [String: Any])
            for t in report["tensors"] as? [[String: Any]] ?? [] { readings.insert(t["hypothesis"] as? String ?? "") }
        }
        #expect(readings.contains { $0.hasPrefix("slice") } && readings.contains("transposed"), "readings chosen: \(readings)")
    }
}

import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// [one-verdict]: with embed's defaults, the owner key alone finds its own models, and every command reaches the
/// same verdict through the same path (docs/FORMAT.md, "The owner's key store" and "Keys tried").
@Suite("The owner key alone: key store, key search, one verdict")
struct OwnerKeyTests {
    static func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not JSON: \(text.prefix(300))")
    }

    /// 7.7M weights: embed's default (capped) strength gives an expected blind Z ≈ 13, far above the 17-key threshold
    /// (5.9), so a random key's spread (±1) never decides a test.
    static let blindShapes: [(String, [Int])] = [
        ("layers.0.attn.q_proj.weight", [768, 768]), ("layers.0.mlp.up_proj.weight", [1536, 768]),
        ("layers.0.mlp.down_proj.weight", [768, 1536]), ("layers.1.mlp.up_proj.weight", [1536, 768]),
        ("layers.1.mlp.down_proj.weight", [768, 1536]), ("layers.2.mlp.up_proj.weight", [1536, 768]),
        ("layers.2.mlp.down_proj.weight", [768, 1536]), ("layers.0.input_layernorm.weight", [768]),
    ]

    static func mode(_ path: String) throws -> Int {
        try #require(try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
    }

    /// Scan records (the JSON lines before the trailer) that have hits.
    static func hits(_ stdout: String) throws -> [String] {
        var paths: [String] = []
        for line in stdout.split(separator: "\n") {
            let r = try json(String(line))
            if let hits = r["hits"] as? [[String: Any]], !hits.isEmpty, let p = r["path"] as? String { paths.append(p) }
        }
        return paths.sorted()
    }

    @Test("small model: two default releases are r1 and r2 in a 0700/0600 key store; detect --key finds each, blind and informed; the original is not detected; scan reports exactly the two; exit codes 0/1")
    func defaultReleases() throws {
        let dir = Fixtures.temporaryDirectory("ownerkey")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors", shapes: Self.blindShapes)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key"]).status == 0)
        for name in ["a", "b"] {
            let e = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--out", dir + "/\(name).safetensors",
                                             "--strength", "0.02", "--quiet"])
            #expect(e.status == 0, "\(e.stderr)")
        }
        // The store: a 0700 folder, one 0600 record per run, releases r1 and r2.
        let store = dir + "/owner.key.store"
        #expect(try Self.mode(store) == 0o700)
        let records = try FileManager.default.contentsOfDirectory(atPath: store + "/records").sorted()
        #expect(records == ["r1-1.json", "r2-1.json"], "\(records)")
        for r in records { #expect(try Self.mode(store + "/records/" + r) == 0o600) }
        let record = try Self.json(try String(contentsOfFile: store + "/records/r2-1.json", encoding: .utf8))
        #expect(record["releaseId"] as? String == "r2" && (record["opening"] as? [String: Any])?["releaseId"] as? String == "r2")

        for (name, release) in [("a", "r1"), ("b", "r2")] {
            for reference in [nil, dir + "/model.safetensors"] {
                let d = try Fixtures.weightmark(["detect", dir + "/\(name).safetensors", "--key", dir + "/owner.key", "--json", "--quiet"]
                                                + (reference.map { ["--reference", $0] } ?? []))
                #expect(d.status == 0, "\(name) \(reference ?? "blind"): \(d.stderr)")
                let report = try Self.json(d.stdout)
                let search = try #require(report["keySearch"] as? [String: Any])
                #expect(search["keysTried"] as? Int == 3, "owner key + r1 + r2")
                #expect((search["matched"] as? [String: Any])?["releaseId"] as? String == release)
                #expect((report["keyCommitment"] as? [String: Any])?["committed"] as? Bool == true,
                        "the store's opening opens the manifest embed wrote: committed")
            }
        }
        let original = try Fixtures.weightmark(["detect", dir + "/model.safetensors", "--key", dir + "/owner.key", "--quiet"])
        #expect(original.status == 1, "\(original.stdout)")
        #expect(original.stdout.contains("not detected") && original.stdout.contains("tried 3 keys"))

        // scan over the two releases and the original: exactly the two, exit 0; over the original alone: exit 1.
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree + "/sub", withIntermediateDirectories: true)
        for (from, to) in [("a", "tree/a.safetensors"), ("b", "tree/sub/b.bin"), ("model", "tree/original.safetensors")] {
            try FileManager.default.copyItem(atPath: dir + "/\(from).safetensors", toPath: dir + "/" + to)
        }
        let scan = try Fixtures.weightmark(["scan", tree, "--key", dir + "/owner.key", "--quiet"])
        #expect(scan.status == 0, "\(scan.stderr)")
        #expect(try Self.hits(scan.stdout.split(separator: "\n").dropLast().joined(separator: "\n"))
                == [tree + "/a.safetensors", tree + "/sub/b.bin"])
        try FileManager.default.removeItem(atPath: tree + "/a.safetensors")
        try FileManager.default.removeItem(atPath: tree + "/sub/b.bin")
        let clean = try Fixtures.weightmark(["scan", tree, "--key", dir + "/owner.key", "--quiet"])
        #expect(clean.status == 1, "\(clean.stderr)")
    }

    @Test("without the store the key file alone still finds default releases (r1…r16 enumerated, paid for: 17 keys); --release narrows to one key")
    func lostStore() throws {
        let dir = Fixtures.temporaryDirectory("ownerkey-lost")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors", shapes: Self.blindShapes)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key"]).status == 0)
        for name in ["a", "b", "c"] {
            #expect(try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--out", dir + "/\(name).safetensors",
                                             "--strength", "0.02", "--quiet"]).status == 0)
        }
        try FileManager.default.removeItem(atPath: dir + "/owner.key.store")
        let d = try Fixtures.weightmark(["detect", dir + "/c.safetensors", "--key", dir + "/owner.key", "--json", "--quiet"])
        #expect(d.status == 0, "\(d.stderr)")
        let report = try Self.json(d.stdout)
        let search = try #require(report["keySearch"] as? [String: Any])
        #expect(search["keysTried"] as? Int == 17)
        #expect((search["matched"] as? [String: Any])?["releaseId"] as? String == "r3")
        #expect((report["keyCommitment"] as? [String: Any])?["committed"] as? Bool == false)
        // The bound pays for the 17 keys: log10 p = log10 exp(−z²/2) + log10 17 (+ log10 2 for the two formats).
        let z = try #require(report["combinedZ"] as? Double), bound = try #require(report["log10PValueBound"] as? Double)
        let single = -z * z / 2 / log(10.0)
        #expect(abs(bound - min(0, single + log10(17.0) + log10(2.0))) < 1e-6)
        let narrowed = try Self.json(try Fixtures.weightmark(["detect", dir + "/c.safetensors", "--key", dir + "/owner.key", "--release", "r3", "--json", "--quiet"]).stdout)
        #expect(narrowed["keySearch"] == nil && narrowed["detected"] as? Bool == true)
        let wrong = try Fixtures.weightmark(["detect", dir + "/c.safetensors", "--key", dir + "/owner.key", "--release", "r1", "--quiet"])
        #expect(wrong.status == 1)
    }

    @Test("old marks stay detectable with the same commands: --no-release and an explicit --release")
    func oldMarks() throws {
        let dir = Fixtures.temporaryDirectory("ownerkey-old")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors", shapes: Self.blindShapes)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key"]).status == 0)
        #expect(try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--out", dir + "/old.safetensors",
                                         "--strength", "0.02", "--no-release", "--quiet"]).status == 0)
        #expect(try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--out", dir + "/named.safetensors",
                                         "--strength", "0.02", "--release", "v2-2026-11", "--quiet"]).status == 0)
        for (file, matched) in [("old", nil), ("named", "v2-2026-11")] as [(String, String?)] {
            let d = try Fixtures.weightmark(["detect", dir + "/\(file).safetensors", "--key", dir + "/owner.key", "--json", "--quiet"])
            #expect(d.status == 0, "\(file): \(d.stderr)")
            let search = try #require(try Self.json(d.stdout)["keySearch"] as? [String: Any])
            #expect((search["matched"] as? [String: Any])?["releaseId"] as? String == matched)
            #expect(search["keysTried"] as? Int == 2, "owner key + the recorded release; no default id was reserved")
        }
    }

    @Test("--rank is refused under format v2 instead of being ignored")
    func rankUnderV2() throws {
        let r = try Fixtures.weightmark(["detect", "x.safetensors", "--key", "k.key", "--rank", "16", "--format", "v2"])
        #expect(r.status == 2 && r.stderr.contains("--rank applies to format v1 only"))
    }

    @Test("MiniLM with embed's defaults: two releases detected blind and informed with the owner key alone, the original not; scan finds exactly the two (exit 0) and exit 1 without them",
          .enabled(if: Fixtures.miniLMAvailable))
    func miniLM() throws {
        let path = try #require(Fixtures.miniLM, "MiniLM missing: run `make model` (or set WEIGHTMARK_MINILM)")
        let folder = (path as NSString).deletingLastPathComponent
        let dir = Fixtures.temporaryDirectory("ownerkey-minilm")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key"]).status == 0)
        for name in ["a", "b"] {
            let e = try Fixtures.weightmark(["embed", path, "--key", dir + "/owner.key", "--out", dir + "/\(name).safetensors", "--quiet"])
            #expect(e.status == 0, "\(e.stderr)")
        }
        for (name, release) in [("a", "r1"), ("b", "r2")] {
            for reference in [nil, folder] {
                let d = try Fixtures.weightmark(["detect", dir + "/\(name).safetensors", "--key", dir + "/owner.key", "--json", "--quiet"]
                                                + (reference.map { ["--reference", $0] } ?? []))
                #expect(d.status == 0, "\(name) \(reference ?? "blind"): \(d.stderr)")
                let report = try Self.json(d.stdout)
                #expect(((report["keySearch"] as? [String: Any])?["matched"] as? [String: Any])?["releaseId"] as? String == release)
                #expect((report["combinedZ"] as? Double ?? 0) > (reference == nil ? 15 : 150))
            }
        }
        let original = try Fixtures.weightmark(["detect", path, "--key", dir + "/owner.key", "--quiet"])
        #expect(original.status == 1)
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        for (from, to) in [(dir + "/a.safetensors", tree + "/a.safetensors"), (dir + "/b.safetensors", tree + "/b.safetensors"), (path, tree + "/original.safetensors")] {
            try FileManager.default.copyItem(atPath: from, toPath: to)
        }
        let scan = try Fixtures.weightmark(["scan", tree, "--key", dir + "/owner.key", "--quiet"])
        #expect(scan.status == 0, "\(scan.stderr)")
        #expect(try Self.hits(scan.stdout.split(separator: "\n").dropLast().joined(separator: "\n")) == [tree + "/a.safetensors", tree + "/b.safetensors"])
        for f in ["a", "b"] { try FileManager.default.removeItem(atPath: tree + "/\(f).safetensors") }
        #expect(try Fixtures.weightmark(["scan", tree, "--key", dir + "/owner.key", "--quiet"]).status == 1)
    }

    @Test("MiniLM: an FFN-permuted personal copy made with the defaults is traced to its recipient with --key, --reference and --recipients alone",
          .enabled(if: Fixtures.miniLMAvailable))
    func traceWithOwnerKey() throws {
        let path = try #require(Fixtures.miniLM, "MiniLM missing: run `make model` (or set WEIGHTMARK_MINILM)")
        let folder = (path as NSString).deletingLastPathComponent
        let dir = Fixtures.temporaryDirectory("ownerkey-trace")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key"]).status == 0)
        let ids = ["alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"]
        Fixtures.write(Array(ids.joined(separator: "\n").utf8), to: dir + "/ids.txt")
        // An earlier plain release, so the search has more than one release to choose from.
        #expect(try Fixtures.weightmark(["embed", path, "--key", dir + "/owner.key", "--out", dir + "/plain.safetensors", "--quiet"]).status == 0)
        let e = try Fixtures.weightmark(["embed", path, "--key", dir + "/owner.key", "--recipients", dir + "/ids.txt", "--out", dir + "/copies", "--quiet"])
        #expect(e.status == 0, "\(e.stderr)")
        let copies = try FileManager.default.contentsOfDirectory(atPath: dir + "/copies").filter { $0.hasSuffix(".safetensors") }.sorted()
        let bob = try #require(copies.first { $0.hasPrefix("bob") })
        try FileManager.default.copyItem(atPath: folder + "/config.json", toPath: dir + "/copies/config.json")
        let attack = try Fixtures.weightmark(["attack", dir + "/copies/" + bob, "--out", dir + "/leak.safetensors", "--attack", "permute:seed=3", "--quiet"])
        #expect(attack.status == 0, "\(attack.stderr)")
        let t = try Fixtures.weightmark(["trace", dir + "/leak.safetensors", "--key", dir + "/owner.key", "--reference", folder,
                                         "--recipients", dir + "/ids.txt", "--json", "--quiet"])
        #expect(t.status == 0, "\(t.stderr)")
        let report = try Self.json(t.stdout)
        let accused = (report["accused"] as? [[String: Any]] ?? []).compactMap { $0["recipient"] as? String }
        #expect(accused == ["bob@example.com"], "\(t.stdout.prefix(2000))")
        #expect(report["keysTried"] as? Int == 3, "owner key + r1 + r2 (+ nothing else): \(report["keysTried"] ?? "nil")")
        #expect((report["keyCommitment"] as? [String: Any])?["releaseId"] as? String == "r2")
        // Without --recipients, the key store's list for that release is used.
        let stored = try Fixtures.weightmark(["trace", dir + "/leak.safetensors", "--key", dir + "/owner.key", "--reference", folder, "--json", "--quiet"])
        #expect(stored.status == 0, "\(stored.stderr)")
        #expect(((try Self.json(stored.stdout)["accused"] as? [[String: Any]]) ?? []).compactMap { $0["recipient"] as? String } == ["bob@example.com"])
    }

    @Test("evidence --key owner.key of a rotated small Llama says detected with the same Z as detect --reference, and --verify replays it")
    func evidenceOfRotatedLlama() throws {
        let dir = Fixtures.temporaryDirectory("ownerkey-evidence")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallLlama(to: dir + "/original", layers: 2, hidden: 256, ffn: 512, vocab: 1000, heads: 8, kvHeads: 4)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key"]).status == 0)
        let e = try Fixtures.weightmark(["embed", dir + "/original", "--key", dir + "/owner.key", "--out", dir + "/marked", "--quiet"])
        #expect(e.status == 0, "\(e.stderr)")
        let a = try Fixtures.weightmark(["attack", dir + "/marked", "--out", dir + "/rotated", "--attack", "rotate:seed=4", "--quiet"])
        #expect(a.status == 0, "\(a.stderr)")
        let d = try Fixtures.weightmark(["detect", dir + "/rotated", "--key", dir + "/owner.key", "--reference", dir + "/original", "--json", "--quiet"])
        #expect(d.status == 0, "\(d.stderr)")
        let detectZ = try #require(try Self.json(d.stdout)["combinedZ"] as? Double)
        let w = try Fixtures.weightmark(["evidence", dir + "/rotated", "--key", dir + "/owner.key", "--reference", dir + "/original",
                                         "--out", dir + "/case", "--quiet"])
        #expect(w.status == 0, "\(w.stdout)\n\(w.stderr)")
        #expect(w.stdout.contains("WATERMARK DETECTED"))
        let claimed = try Self.json(try String(contentsOfFile: dir + "/case/report.json", encoding: .utf8))
        let z = try #require(claimed["combinedZ"] as? Double)
        #expect(abs(z - detectZ) <= 1e-6 * max(1, abs(detectZ)), "evidence Z \(z) vs detect Z \(detectZ)")
        let v = try Fixtures.weightmark(["evidence", "--verify", dir + "/case"])
        #expect(v.status == 0, "\(v.stdout)\n\(v.stderr)")
        #expect(v.stdout.contains("EVIDENCE VALID"))
    }
}

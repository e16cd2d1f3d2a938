import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

@Suite("weightmark keygen / embed / detect / combine")
struct WatermarkCommandTests {
    func setUp() throws -> String {
        let dir = Fixtures.temporaryDirectory("cli")
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors")
        let r = try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key"])
        #expect(r.status == 0)
        return dir
    }

    @Test("keygen writes a 0600 key and never overwrites")
    func keygen() throws {
        let dir = try setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let attrs = try FileManager.default.attributesOfItem(atPath: dir + "/owner.key")
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        let before = try Data(contentsOf: URL(fileURLWithPath: dir + "/owner.key"))
        let again = try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key"])
        #expect(again.status == 2)
        #expect(again.stderr.contains("already exists"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/owner.key")) == before)
        // The secret never appears in the printed output.
        let text = String(decoding: before, as: UTF8.self)
        let secret = try #require(text.split(separator: "\"").first { $0.count == 64 })
        #expect(!again.stdout.contains(secret) && !again.stderr.contains(secret))
    }

    @Test("embed → detect exit codes: 0 detected, 1 not detected; combine reproduces the verdict")
    func roundTrip() throws {
        let dir = try setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let e = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key",
                                         "--out", dir + "/marked.safetensors", "--strength", "0.005", "--format", "v1", "--no-release", "--quiet"])
        #expect(e.status == 0, "\(e.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir + "/marked.safetensors.weightmark.json"))
        let manifest = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/marked.safetensors.weightmark.json"))) as! [String: Any]
        #expect((manifest["tensors"] as! [Any]).count == 4)
        // Outputs are hashed; inputs are named and sized, and hashed only with --hash-input.
        let output = try #require((manifest["output"] as? [[String: Any]])?.first)
        #expect((output["sha256"] as? String)?.count == 64)
        let input = try #require((manifest["input"] as? [[String: Any]])?.first)
        let inputSize = try FileManager.default.attributesOfItem(atPath: dir + "/model.safetensors")[.size] as? Int
        #expect(input["sha256"] == nil && input["bytes"] as? Int == inputSize)
        let hashed = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--hash-input",
                                              "--out", dir + "/marked2.safetensors", "--strength", "0.005", "--no-release", "--quiet"])
        #expect(hashed.status == 0, "\(hashed.stderr)")
        let manifest2 = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/marked2.safetensors.weightmark.json"))) as! [String: Any]
        #expect(((manifest2["input"] as? [[String: Any]])?.first?["sha256"] as? String)?.count == 64)
        // A manifest without input hashes still serves detect --manifest.
        let withManifest = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key",
                                                    "--reference", dir + "/model.safetensors",
                                                    "--manifest", dir + "/marked.safetensors.weightmark.json", "--quiet"])
        #expect(withManifest.status == 0, "\(withManifest.stderr)")
        #expect(!(String(decoding: try Data(contentsOf: URL(fileURLWithPath: dir + "/marked.safetensors.weightmark.json")), as: UTF8.self)
            .contains(try String(contentsOfFile: dir + "/owner.key", encoding: .utf8).components(separatedBy: "\"secret\" : \"")[1].prefix(64))))

        let d = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key",
                                         "--reference", dir + "/model.safetensors", "--json", "--quiet"])
        #expect(d.status == 0)
        let report = try JSONSerialization.jsonObject(with: Data(d.stdout.utf8)) as! [String: Any]
        #expect(report["detected"] as? Bool == true)
        #expect(report["mode"] as? String == "informed")

        let n = try Fixtures.weightmark(["detect", dir + "/model.safetensors", "--key", dir + "/owner.key", "--quiet"])
        #expect(n.status == 1)
        #expect(n.stdout.contains("not detected"))

        let r1 = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key", "--format", "v1", "--part", "0/2",
                                          "--reference", dir + "/model.safetensors", "--report", dir + "/r1.json", "--quiet"])
        let r2 = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key", "--format", "v1", "--part", "1/2",
                                          "--reference", dir + "/model.safetensors", "--report", dir + "/r2.json", "--quiet"])
        #expect(r1.status == 0 && r2.status == 0)
        let c = try Fixtures.weightmark(["combine", dir + "/r1.json", dir + "/r2.json", "--json"])
        #expect(c.status == 0)
        let merged = try JSONSerialization.jsonObject(with: Data(c.stdout.utf8)) as! [String: Any]
        let z1 = merged["combinedZ"] as! Double, z0 = report["combinedZ"] as! Double
        #expect(abs(z1 - z0) < 1e-9 * abs(z0))
        let dup = try Fixtures.weightmark(["combine", dir + "/r1.json", dir + "/r1.json"])
        #expect(dup.status == 2 && dup.stderr.contains("disjoint"))
    }

    @Test("bad inputs give clear errors (exit 2) and write nothing")
    func badInputs() throws {
        let dir = try setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        Fixtures.write(Array("{\"format\": \"something\"}".utf8), to: dir + "/bad.key")
        Fixtures.write([1, 2, 3], to: dir + "/existing.safetensors")
        Fixtures.write([0, 0, 0, 0, 0, 0, 0, 0, 9], to: dir + "/broken.safetensors")
        let cases: [([String], String)] = [
            (["embed", dir + "/model.safetensors", "--key", dir + "/missing.key", "--out", dir + "/o1.safetensors"], "missing.key"),
            (["embed", dir + "/model.safetensors", "--key", dir + "/bad.key", "--out", dir + "/o2.safetensors"], "bad.key"),
            (["embed", dir + "/broken.safetensors", "--key", dir + "/owner.key", "--out", dir + "/o3.safetensors"], "broken.safetensors"),
            (["embed", dir + "/nope.safetensors", "--key", dir + "/owner.key", "--out", dir + "/o4.safetensors"], "nope.safetensors"),
            (["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--out", dir + "/existing.safetensors"], "existing.safetensors"),
            (["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--out", dir + "/model.safetensors"], "is the input"),
            (["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--out", dir + "/o5.safetensors", "--strength", "2"], "--strength"),
            (["detect", dir + "/model.safetensors", "--key", dir + "/bad.key"], "bad.key"),
            (["detect", dir + "/broken.safetensors", "--key", dir + "/owner.key"], "broken.safetensors"),
            (["detect", dir + "/model.safetensors", "--key", dir + "/owner.key", "--alpha", "0"], "--alpha"),
            (["combine", dir + "/bad.key"], "bad.key"),
        ]
        let before = Set(try FileManager.default.contentsOfDirectory(atPath: dir))
        for (args, mention) in cases {
            let r = try Fixtures.weightmark(args)
            #expect(r.status == 2, "\(args): exit \(r.status)")
            #expect(r.stderr.contains(mention), "\(args): \(r.stderr)")
            #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Stack dump"))
        }
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: dir)) == before)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/existing.safetensors")) == Data([1, 2, 3]))
    }

    @Test("--force replaces an existing output; folder models keep their layout and auxiliary files")
    func forceAndFolders() throws {
        let dir = try setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let folder = dir + "/hf"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Fixtures.writeSmallModel(to: folder + "/model.safetensors")
        Fixtures.write(Array("{\"model_type\": \"test\"}".utf8), to: folder + "/config.json")
        let args = ["embed", folder, "--key", dir + "/owner.key", "--out", dir + "/hf-marked", "--no-release", "--quiet"]
        #expect(try Fixtures.weightmark(args).status == 0)
        #expect(try Fixtures.weightmark(args).status == 2)
        #expect(try Fixtures.weightmark(args + ["--force"]).status == 0)
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: dir + "/hf-marked"))
        #expect(files == ["model.safetensors", "config.json"])
        #expect(try Fixtures.weightmark(["detect", dir + "/hf-marked", "--key", dir + "/owner.key", "--reference", folder, "-q"]).status == 0)
    }

    @Test("--help documents exit codes")
    func help() throws {
        let r = try Fixtures.weightmark(["detect", "--help"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("Exit codes: 0 detected, 1 not detected, 2 error"))
        let v = try Fixtures.weightmark(["--version"])
        #expect(v.status == 0 && v.stdout.contains("BLAS"))
    }
}

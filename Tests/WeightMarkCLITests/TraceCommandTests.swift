import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

@Suite("weightmark embed --recipients / trace")
struct TraceCommandTests {
    func setUp() throws -> String {
        let dir = Fixtures.temporaryDirectory("trace")
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors")
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key"]).status == 0)
        return dir
    }

    @Test("personal copies name their recipient; the original and someone else's key accuse no one")
    func embedAndTrace() throws {
        let dir = try setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ids = ["alice@example.org", "bob@example.org", "licence 0042/b"]
        try (ids.joined(separator: "\n") + "\n").write(toFile: dir + "/recipients.txt", atomically: true, encoding: .utf8)
        let e = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--recipients", dir + "/recipients.txt",
                                         "--out", dir + "/copies", "--quiet"])
        #expect(e.status == 0, "\(e.stderr)")
        let index = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/copies/recipients.json"))) as? [[String: Any]])
        #expect(index.map { $0["recipient"] as? String } == ids)
        let bobCopy = dir + "/copies/" + (index[1]["copy"] as! String)
        let manifest = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: bobCopy + ".weightmark.json"))) as? [String: Any])
        #expect((manifest["fingerprint"] as? [String: Any])?["recipient"] as? String == "bob@example.org")
        // The listed recipients: the three and 200 others.
        let listed = ids + (0..<200).map { "someone-\($0)" }
        try listed.joined(separator: "\n").write(toFile: dir + "/listed.txt", atomically: true, encoding: .utf8)
        let t = try Fixtures.weightmark(["trace", bobCopy, "--key", dir + "/owner.key", "--manifest", bobCopy + ".weightmark.json",
                                         "--reference", dir + "/model.safetensors", "--recipients", dir + "/listed.txt", "--json", "--quiet"])
        #expect(t.status == 0, "\(t.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(t.stdout.utf8)) as? [String: Any])
        let accused = try #require(report["accused"] as? [[String: Any]])
        #expect(accused.map { $0["recipient"] as? String } == ["bob@example.org"])
        // The owner mark is still there (this small model is below blind detection's reach at the δ cap: informed).
        let d = try Fixtures.weightmark(["detect", bobCopy, "--key", dir + "/owner.key", "--manifest", bobCopy + ".weightmark.json",
                                         "--reference", dir + "/model.safetensors", "--quiet"])
        #expect(d.status == 0, "\(d.stdout)")
        // The unmarked original: nobody.
        let none = try Fixtures.weightmark(["trace", dir + "/model.safetensors", "--key", dir + "/owner.key", "--manifest", bobCopy + ".weightmark.json",
                                            "--reference", dir + "/model.safetensors",
                                            "--recipients", dir + "/listed.txt", "--quiet"])
        #expect(none.status == 1, "\(none.stdout)\(none.stderr)")
        #expect(none.stdout.contains("no recipient accused"))
        // Another key reads another code: nobody.
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/other.key"]).status == 0)
        let other = try Fixtures.weightmark(["trace", bobCopy, "--key", dir + "/other.key", "--reference", dir + "/model.safetensors",
                                             "--recipients", dir + "/listed.txt", "--quiet"])
        #expect(other.status == 1, "\(other.stdout)\(other.stderr)")
    }

    @Test("trace --help teaches: the bound, the exit codes, an example")
    func help() throws {
        let r = try Fixtures.weightmark(["trace", "--help"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("Exit codes: 0 someone accused, 1 no one accused, 2 error, 3 inconclusive."))
        #expect(r.stdout.contains("Chernoff") && r.stdout.contains("weightmark trace leak.gguf --key owner.key"))
        let e = try Fixtures.weightmark(["embed", "--help"])
        #expect(e.stdout.contains("--recipients"))
        #expect(try Fixtures.weightmark(["embed", "--help-hidden"]).stdout.contains("--fingerprint-share"))
    }

    @Test("bad input: a repeated id names the file and line; magnitude shaping and two recipient flags are refused")
    func badInput() throws {
        let dir = try setUp()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "alice\nbob\nalice\n".write(toFile: dir + "/dup.txt", atomically: true, encoding: .utf8)
        let dup = try Fixtures.weightmark(["trace", dir + "/model.safetensors", "--key", dir + "/owner.key", "--reference", dir + "/model.safetensors",
                                           "--recipients", dir + "/dup.txt"])
        #expect(dup.status == 2)
        #expect(dup.stderr.contains("dup.txt:3") && dup.stderr.contains("repeats"), "\(dup.stderr)")
        let magnitude = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--recipient", "alice",
                                                 "--shaping", "magnitude", "--out", dir + "/a.safetensors"])
        #expect(magnitude.status == 2 && magnitude.stderr.contains("uniform"))
        let both = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--recipient", "alice",
                                            "--recipients", dir + "/dup.txt", "--out", dir + "/a"])
        #expect(both.status == 2)
        #expect(!FileManager.default.fileExists(atPath: dir + "/a.safetensors") && !FileManager.default.fileExists(atPath: dir + "/a"))
        // A personal copy is never written over an existing file without --force.
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir + "/taken.safetensors"))
        let taken = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--recipient", "alice",
                                             "--out", dir + "/taken.safetensors"])
        #expect(taken.status == 2)
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/taken.safetensors")) == Data([1, 2, 3]))
    }
}

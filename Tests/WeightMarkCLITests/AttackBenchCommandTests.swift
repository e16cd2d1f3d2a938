import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

@Suite("weightmark attack / bench")
struct AttackBenchCommandTests {
    @Test("attack --list documents every attack; a chain writes an attacked model that detect still finds")
    func attackCommand() throws {
        let dir = Fixtures.temporaryDirectory("attack-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let list = try Fixtures.weightmark(["attack", "--list"])
        #expect(list.status == 0)
        for name in ["fp16", "int8", "nf4", "gguf", "prune", "nm", "noise", "lowrank", "lora", "overwrite", "merge", "collusion", "permute"] {
            #expect(list.stdout.contains(name), "\(name) missing from --list")
        }
        try Fixtures.writeSmallModel(to: dir + "/m.safetensors")
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key"]).status == 0)
        #expect(try Fixtures.weightmark(["embed", dir + "/m.safetensors", "--key", dir + "/k.key", "--out", dir + "/w.safetensors", "--strength", "0.02", "--no-release", "-q"]).status == 0)
        let a = try Fixtures.weightmark(["attack", dir + "/w.safetensors", "--out", dir + "/a.safetensors", "--attack", "prune:fraction=0.5,int4:group=64,fp16"])
        #expect(a.status == 0, "\(a.stderr)")
        #expect(a.stdout.contains("prune:fraction=0.5,mode=magnitude → int4:group=64 → fp16"))
        let attacked = try SafetensorsModel(path: dir + "/a.safetensors")
        #expect(attacked.tensor(named: "layers.0.attn.q_proj.weight")?.dtype == .f16)
        #expect(attacked.tensor(named: "layers.0.input_layernorm.weight")?.dtype == .f32) // 1-D: untouched
        #expect(try Fixtures.weightmark(["detect", dir + "/a.safetensors", "--key", dir + "/k.key", "--reference", dir + "/m.safetensors", "-q"]).status == 0)
        let bad = try Fixtures.weightmark(["attack", dir + "/w.safetensors", "--out", dir + "/b.safetensors", "--attack", "shred"])
        #expect(bad.status == 2 && bad.stderr.contains("unknown attack"))
        let collusion = try Fixtures.weightmark(["attack", dir + "/w.safetensors", "--out", dir + "/c.safetensors", "--attack", "collusion:copies=3"])
        #expect(collusion.status == 2 && collusion.stderr.contains("original"))
        #expect(!FileManager.default.fileExists(atPath: dir + "/b.safetensors") && !FileManager.default.fileExists(atPath: dir + "/c.safetensors"))
    }

    @Test("bench --quick writes the table, Markdown, JSON, CSV and SVG")
    func benchCommand() throws {
        let dir = Fixtures.temporaryDirectory("bench-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/m.safetensors")
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key"]).status == 0)
        let r = try Fixtures.weightmark(["bench", dir + "/m.safetensors", "--key", dir + "/k.key", "--out", dir + "/bench",
                                         "--quick", "--families", "int-k,magnitude,noise", "-q"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("int4 g128") && r.stdout.contains("prune"))
        for f in ["results.md", "results.json", "results.csv", "plots.svg"] {
            #expect(FileManager.default.fileExists(atPath: dir + "/bench/" + f), "\(f)")
        }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/bench/results.json"))) as! [String: [[String: Any]]]
        let points = try #require(json["uniform"])
        #expect(points.count == 4) // none + one point for each of 3 families
        #expect(points.allSatisfy { $0["blindZ"] is Double && $0["informedZ"] is Double && $0["damage"] is Double })
        // A second run refuses to overwrite without --force.
        let again = try Fixtures.weightmark(["bench", dir + "/m.safetensors", "--key", dir + "/k.key", "--out", dir + "/bench", "--quick", "-q"])
        #expect(again.status == 2)
    }
}

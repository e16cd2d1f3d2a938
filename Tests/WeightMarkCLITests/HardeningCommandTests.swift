import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// Regressions for issue [hardening] through the real executable: exit codes, messages, nothing overwritten.
@Suite("CLI hardening: exit 2 with a clear message, never a crash or a silent overwrite")
struct HardeningCommandTests {
    func setUp(_ label: String, format: String = "v2") throws -> String {
        let dir = Fixtures.temporaryDirectory(label)
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors")
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key", "--quiet"]).status == 0)
        #expect(try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--out",
                                         dir + "/marked.safetensors", "--strength", "0.005", "--format", format, "--no-release", "--quiet"]).status == 0)
        return dir
    }

    @Test("run-time errors print one message without the usage text")
    func noUsageOnRuntimeErrors() throws {
        let dir = try setUp("h-usage")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key"])
        #expect(r.status == 2 && r.stderr.contains("already exists") && !r.stderr.contains("USAGE"), "\(r.stderr)")
        Fixtures.write(Array("{}".utf8), to: dir + "/bad.json")
        let m = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key", "--manifest", dir + "/bad.json"])
        #expect(m.status == 2 && m.stderr.contains("bad.json") && !m.stderr.contains("USAGE"), "\(m.stderr)")
    }

    @Test("detect --report never replaces a file without --force")
    func reportOverwrite() throws {
        let dir = try setUp("h-report")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        Fixtures.write(Array("keep me".utf8), to: dir + "/r.json")
        let r = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key", "--reference", dir + "/model.safetensors", "--report", dir + "/r.json", "--quiet"])
        #expect(r.status == 2 && r.stderr.contains("r.json"), "\(r.stderr)")
        #expect(FileManager.default.contents(atPath: dir + "/r.json") == Data("keep me".utf8))
        let forced = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key", "--reference", dir + "/model.safetensors", "--report", dir + "/r.json", "--force", "--quiet"])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(FileManager.default.contents(atPath: dir + "/r.json") != Data("keep me".utf8))
    }

    @Test("detect --part + combine: all parts give the whole verdict; a subset is refused unless --allow-partial")
    func partsAndCombine() throws {
        let dir = try setUp("h-parts", format: "v1")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let whole = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key", "--reference", dir + "/model.safetensors", "--format", "v1", "--json", "--quiet"])
        let wholeZ = try #require((try JSONSerialization.jsonObject(with: Data(whole.stdout.utf8)) as? [String: Any])?["combinedZ"] as? Double)
        for i in 0..<2 {
            let r = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key", "--reference", dir + "/model.safetensors", "--format", "v1", "--part", "\(i)/2",
                                             "--report", dir + "/p\(i).json", "--quiet"])
            #expect(r.status == 0, "\(r.stderr)")
        }
        let all = try Fixtures.weightmark(["combine", dir + "/p0.json", dir + "/p1.json", "--json"])
        let z = try #require((try JSONSerialization.jsonObject(with: Data(all.stdout.utf8)) as? [String: Any])?["combinedZ"] as? Double)
        #expect(abs(z - wholeZ) < 1e-9 * abs(wholeZ) && all.status == 0, "\(all.stderr)")
        let one = try Fixtures.weightmark(["combine", dir + "/p0.json"])
        #expect(one.status == 2 && one.stderr.contains("--allow-partial"), "\(one.stderr)")
        let partial = try Fixtures.weightmark(["combine", dir + "/p0.json", "--allow-partial"])
        #expect(partial.status <= 1 && partial.stdout.contains("PARTIAL COVERAGE"), "\(partial.stdout)")
        for bad in ["2", "0", "nan", "-1"] {
            let r = try Fixtures.weightmark(["combine", dir + "/p0.json", dir + "/p1.json", "--alpha", bad])
            #expect(r.status == 2 && r.stderr.contains("--alpha"), "--alpha \(bad): \(r.stderr)")
        }
        let v2part = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key", "--part", "0/2"])
        #expect(v2part.status == 2 && v2part.stderr.contains("--format v1"), "\(v2part.stderr)")
        for bad in ["2/2", "-1/2", "1/0", "x"] {
            let r = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key", "--part", bad])
            #expect(r.status == 2 && r.stderr.contains("--part"), "--part \(bad): \(r.stderr)")
        }
    }

    @Test("detect --manifest: flags that contradict the manifest's selection are an error; agreeing ones are used and said")
    func manifestSelection() throws {
        let dir = try setUp("h-manifest")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let manifest = dir + "/marked.safetensors.weightmark.json"
        let conflict = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key", "--manifest", manifest,
                                                "--exclude", "embed_*"])
        #expect(conflict.status == 2 && conflict.stderr.contains("disagree"), "\(conflict.stderr)")
        let ok = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key", "--manifest", manifest, "--json"])
        let report = try #require(try JSONSerialization.jsonObject(with: Data(ok.stdout.utf8)) as? [String: Any])
        #expect(report["rank"] as? Int == 32 && (report["selectedTensors"] as? [Any])?.count == 4 && report["selection"] != nil)
    }

    @Test("synth rejects NaN, infinite and absurd sizes with exit 2", arguments: ["nan", "inf", "1e30", "-5", "0", "1e13B"])
    func synthSizes(params: String) throws {
        let dir = Fixtures.temporaryDirectory("h-synth")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try Fixtures.weightmark(["synth", "--params", params, "--out", dir + "/s"])
        #expect(r.status == 2 && r.stderr.contains("--params"), "\(r.stderr)")
        let h = try Fixtures.weightmark(["synth", "--params", "1M", "--hidden", "0", "--out", dir + "/s"])
        #expect(h.status == 2 && h.stderr.contains("--hidden"), "\(h.stderr)")
    }

    @Test("attack --json prints numbers as JSON numbers")
    func attackJSON() throws {
        let dir = try setUp("h-attack")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try Fixtures.weightmark(["attack", dir + "/marked.safetensors", "--out", dir + "/a.safetensors", "--attack", "noise:sigma=0.3", "--json", "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let j = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(j["relativeError"] is Double && j["tensorsAttacked"] is Int && !(j["relativeError"] is String), "\(r.stdout)")
    }

    @Test("a key file others can read draws a warning naming the fix")
    func keyPermissionsWarning() throws {
        let dir = try setUp("h-keymode")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        chmod(dir + "/owner.key", 0o644)
        let r = try Fixtures.weightmark(["detect", dir + "/marked.safetensors", "--key", dir + "/owner.key", "--reference", dir + "/model.safetensors"])
        #expect(r.status == 0 && r.stderr.contains("chmod 600"), "\(r.stderr)")
    }

    @Test("embed of a folder with an unmarked pytorch_model.bin: exit 2 naming it; --drop-unmarked-weights leaves it out")
    func unmarkedCopies() throws {
        let dir = try setUp("h-folder")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/in/1_Pooling", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: dir + "/model.safetensors", toPath: dir + "/in/model.safetensors")
        Fixtures.write([0x50, 0x4B, 0x03, 0x04] + [UInt8](repeating: 1, count: 100_000), to: dir + "/in/pytorch_model.bin")
        Fixtures.write(Array("{}".utf8), to: dir + "/in/1_Pooling/config.json")
        let refused = try Fixtures.weightmark(["embed", dir + "/in", "--key", dir + "/owner.key", "--out", dir + "/out", "--quiet"])
        #expect(refused.status == 2 && refused.stderr.contains("pytorch_model.bin") && refused.stderr.contains("--drop-unmarked-weights"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
        let ok = try Fixtures.weightmark(["embed", dir + "/in", "--key", dir + "/owner.key", "--out", dir + "/out", "--drop-unmarked-weights", "--quiet"])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/out/pytorch_model.bin"))
        #expect(FileManager.default.fileExists(atPath: dir + "/out/1_Pooling/config.json"))
    }

    @Test("a NaN or Inf weight makes GGUF quantization (attack, convert) exit 2 naming the tensor, not trap", arguments: ["Q8_0", "Q4_K", "Q4_0"])
    func nonFiniteQuantization(type: String) throws {
        let dir = Fixtures.temporaryDirectory("h-nanq")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var values = try Fixtures.writeSmallLlama(to: dir + "/llama")
        let name = "model.layers.0.mlp.up_proj.weight"
        values[name]![7] = .nan
        values[name]![99] = -.infinity
        let model = try SafetensorsModel(path: dir + "/llama")
        try SafetensorsWriter.write(model.tensors.map { OutputTensor(name: $0.name, dtype: .f32, shape: $0.shape,
                                                                     bytes: FloatConversion.encode(values[$0.name]!, as: .f32)) },
                                    metadata: nil, to: dir + "/llama/model.safetensors", overwrite: true)
        let attack = try Fixtures.weightmark(["attack", dir + "/llama", "--out", dir + "/a", "--attack", "gguf:type=\(type)", "--quiet"])
        #expect(attack.status == 2 && attack.stderr.contains(name) && attack.stderr.contains("NaN"), "\(attack.stderr)")
        let convert = try Fixtures.weightmark(["convert", dir + "/llama", "--type", type, "--out", dir + "/c.gguf", "--quiet"])
        #expect(convert.status == 2 && convert.stderr.contains(name) && convert.stderr.contains("NaN"), "\(convert.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/c.gguf") && !FileManager.default.fileExists(atPath: dir + "/a"))
    }

    @Test("convert and synth --json print numbers as JSON numbers")
    func convertAndSynthJSON() throws {
        let dir = Fixtures.temporaryDirectory("h-json")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallLlama(to: dir + "/llama")
        let c = try Fixtures.weightmark(["convert", dir + "/llama", "--type", "Q8_0", "--out", dir + "/l.gguf", "--json", "--quiet"])
        #expect(c.status == 0, "\(c.stderr)")
        let cj = try #require(try JSONSerialization.jsonObject(with: Data(c.stdout.utf8)) as? [String: Any])
        #expect(cj["tensors"] is Int && cj["bytes"] is Int && cj["dropped"] is [Any], "\(c.stdout)")
        let s = try Fixtures.weightmark(["synth", "--params", "2M", "--hidden", "128", "--heads", "2", "--vocab", "512", "--out", dir + "/s", "--json", "--quiet"])
        #expect(s.status == 0, "\(s.stderr)")
        let sj = try #require(try JSONSerialization.jsonObject(with: Data(s.stdout.utf8)) as? [String: Any])
        #expect(sj["parameters"] is Int && sj["seconds"] is Double && sj["layers"] is Int, "\(s.stdout)")
    }
}

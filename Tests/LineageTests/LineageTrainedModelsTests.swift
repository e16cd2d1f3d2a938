import Alignment
import Foundation
import Testing
import LinearAlgebra
@testable import Lineage
import TensorIO
import WeightMarkTestSupport

/// Small Llamas trained for real (Tests/Oracles/lineage_models.py, torch on the CPU, cached in .cache/lineage-models):
/// eight from independent seeds on the same data and recipe, real derivatives of `seed0`, and a distilled student.
enum TrainedModels {
    static let folder = Fixtures.packageRoot + "/.cache/lineage-models"
    static let derivatives = ["ft-small", "ft-large", "lora-merged", "pruned-retrained", "layers-dropped", "ft-merge"]
    static let seeds = (0..<8).map { "seed\($0)" }

    /// Trains them once (the script skips work when its cache matches its version).
    static let ready: Result<String, Error> = {
        do {
            guard let python = Fixtures.python else { throw Fixtures.OracleError(message: "no Python oracle: run `make venv`") }
            _ = try Fixtures.run(python, [Fixtures.packageRoot + "/Tests/Oracles/lineage_models.py", folder])
            return .success(folder)
        } catch { return .failure(error) }
    }()

    static func path(_ name: String) throws -> String { try ready.get() + "/" + name }

    static func run(_ suspect: String, against reference: String = "seed0", options: LineageOptions = LineageOptions()) throws -> LineageReport {
        try LineageTest.run(suspect: openTensorSource(path: path(suspect)), reference: openTensorSource(path: path(reference)),
                            options: options, config: ModelConfig.load(near: path(reference)))
    }
}

@Suite("Lineage on models trained for real", .serialized, .enabled(if: Fixtures.oraclesAvailable, "Python oracle venv not installed"))
struct LineageTrainedModelsTests {
    @Test("every weight derivative of seed0 is derived by the exact test, p ≤ 1e-6", arguments: TrainedModels.derivatives)
    func derivatives(_ name: String) throws {
        let r = try TrainedModels.run(name)
        print("lineage \(name): exact log10 p \(r.log10PExact), robust log10 p \(r.log10PRobust), map \(r.localization.map { "\($0.suspectLayer)←\($0.referenceLayer.map(String.init) ?? "-")" })")
        #expect(r.verdict == "derived")
        #expect(r.basis == "exact")
        #expect(r.log10PExact <= -6)
    }

    /// ft-large passed through what leakers do to a copy (WeightMark's attack tool): quantized to int4 and GGUF Q4_K
    /// round trips, its residual stream rotated with the norms fused, its FFN units rescaled, and its FFN units
    /// permuted. The exact test must find every one but the permuted copy; the permuted copy is found by the
    /// permutation-robust test, reported as approximate.
    @Test("ft-large quantized, rotated, rescaled or permuted is still derived", arguments: ["int4", "gguf:type=Q4_K", "rotate", "scale-ffn", "permute"])
    func attacked(_ attack: String) throws {
        let dir = Fixtures.temporaryDirectory("lineage-attack")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = dir + "/attacked"
        let a = try Fixtures.weightmark(["attack", try TrainedModels.path("ft-large"), "--attack", attack, "--out", out, "--quiet"])
        try #require(a.status == 0, "\(a.stderr)")
        let r = try LineageTest.run(suspect: openTensorSource(path: out), reference: openTensorSource(path: TrainedModels.path("seed0")))
        print("lineage ft-large+\(attack): exact log10 p \(r.log10PExact), robust log10 p \(r.log10PRobust), basis \(r.basis ?? "-")")
        #expect(r.verdict == "derived")
        if attack == "permute" {
            #expect(r.log10PExact > -3, "a permuted copy looks random to the exact test, as it must")
            #expect(r.basis == "approximate" && r.log10PRobust <= -6)
        } else {
            #expect(r.basis == "exact" && r.log10PExact <= -6)
        }
    }

    @Test("the CLI: exit 0 derived, 1 not derived, 2 for a layout it does not read; --json carries the verdict")
    func commandLine() throws {
        let derived = try Fixtures.weightmark(["lineage", try TrainedModels.path("ft-small"), "--reference", try TrainedModels.path("seed0"), "--json", "--quiet"])
        #expect(derived.status == 0, "\(derived.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(derived.stdout.utf8)) as? [String: Any])
        #expect(object["verdict"] as? String == "derived" && object["basis"] as? String == "exact")
        let independent = try Fixtures.weightmark(["lineage", try TrainedModels.path("seed1"), "--reference", try TrainedModels.path("seed0"), "--quiet"])
        #expect(independent.status == 1 && independent.stdout.hasPrefix("NOT DERIVED"), "\(independent.stdout)")
        let dir = Fixtures.temporaryDirectory("lineage-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/small.safetensors")
        let refused = try Fixtures.weightmark(["lineage", dir + "/small.safetensors", "--reference", try TrainedModels.path("seed0")])
        #expect(refused.status == 2 && refused.stderr.contains("no BERT or Llama layer names"), "\(refused.stderr)")
    }

    @Test("a model cut to layers 0, 1 and 3 is localized layer by layer")
    func layersDropped() throws {
        let r = try TrainedModels.run("layers-dropped")
        #expect(r.allPairs)
        #expect(r.pairsTried == 3 * 4)
        let map = Dictionary(uniqueKeysWithValues: r.localization.map { ($0.suspectLayer, $0.referenceLayer) })
        #expect(map[0] == 0 && map[1] == 1 && map[2] == 3, "map \(map)")
    }

    @Test("independently trained seeds (same data, same recipe) and the distilled student are not derived")
    func independent() throws {
        var smallestExact = 0.0, smallestRobust = 0.0
        var pairs: [(String, String)] = []
        for a in TrainedModels.seeds { for b in TrainedModels.seeds where a != b { pairs.append((a, b)) } }
        pairs.append(("distilled", "seed0"))
        pairs.append(("seed0", "distilled"))
        for (s, r) in pairs {
            let report = try TrainedModels.run(s, against: r)
            smallestExact = min(smallestExact, report.log10PExact)
            smallestRobust = min(smallestRobust, report.log10PRobust)
            #expect(report.verdict == "not derived", "\(s) against \(r): \(report.log10PExact), \(report.log10PRobust)")
            #expect(report.log10PExact > -3 && report.log10PRobust > -3, "\(s) against \(r): exact \(report.log10PExact), robust \(report.log10PRobust)")
        }
        print("lineage null: \(pairs.count) ordered pairs of independently trained models; smallest log10 p exact \(smallestExact), robust \(smallestRobust)")
    }

    /// The exact construction: under H0 the p-value's law is that over random permutations of the suspect's units.
    /// 2,000 draws of independently permuted layers of seed1 against seed0, through `LineageTest.run` (the CLI's path).
    @Test("calibration of the exact test over 2,000 permutation draws")
    func calibration() throws {
        let suspect = try openTensorSource(path: TrainedModels.path("seed1"))
        let reference = try openTensorSource(path: TrainedModels.path("seed0"))
        let layout = try #require(TransformerLayout.recognize(names: suspect.sourceTensors.map(\.name)))
        var originals: [String: (shape: [Int], values: [Float])] = [:]
        for l in layout.layers {
            for name in [l.up, l.down, l.gate].compactMap({ $0 }) {
                originals[name] = (suspect.sourceTensor(named: name)!.shape, try suspect.decodeFloats(named: name))
            }
        }
        var rng = SplitMix64(seed: 77)
        let draws = 2_000
        var ps: [Double] = []
        for _ in 0..<draws {
            var overrides: [String: (shape: [Int], values: [Float])] = [:]
            for l in layout.layers {
                let n = originals[l.up]!.shape[0]
                let perm = Array(0..<n).shuffled(using: &rng)
                for name in [l.up, l.gate].compactMap({ $0 }) {
                    let (shape, v) = originals[name]!
                    let d = shape[1]
                    overrides[name] = (shape, perm.flatMap { v[($0 * d)..<($0 * d + d)] })
                }
                let (shape, v) = originals[l.down]!
                let d = shape[0]
                var out = v
                for i in 0..<d { for j in 0..<n { out[i * n + j] = v[i * n + perm[j]] } }
                overrides[l.down] = (shape, out)
            }
            let permuted = AlignedTensors(base: suspect, overrides: overrides)
            let r = try LineageTest.run(suspect: permuted, reference: reference)
            ps.append(pow(10, r.log10PExact))
        }
        var line: [String] = []
        for u in [0.5, 0.1, 0.01, 0.001] {
            let share = Double(ps.filter { $0 <= u }.count) / Double(draws)
            line.append("P(p ≤ \(u)) = \(share)")
            #expect(share <= u + 3 * (u / Double(draws)).squareRoot(), "share \(share) at \(u)")
        }
        print("lineage calibration, \(draws) draws: " + line.joined(separator: ", ") + ", smallest p \(ps.min()!)")
    }
}

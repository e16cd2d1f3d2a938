import Alignment
import Attacks
import Foundation
import LinearAlgebra
import Synthesis
import TensorIO
import Testing
import WeightMarkTestSupport

/// Alignment undoes function-preserving edits exactly (up to float rounding) from the suspect and the reference alone.
@Suite("Key-free alignment of a suspect to its reference")
struct AlignmentTests {
    /// Applies an attack chain to a model and returns the attacked tensors as an in-memory source (all tensors).
    static func attacked(_ model: SafetensorsModel, _ spec: String, extra: [String: (shape: [Int], values: [Float])] = [:]) throws -> MemorySource {
        let out = try AttackRunner.apply(AttackCatalog.chain(spec), to: model, context: AttackContext())
        var tensors: [(String, [Int], [Float])] = []
        for t in model.tensors where t.dtype.isSupportedFloat {
            if let e = extra[t.name] { tensors.append((t.name, e.shape, e.values)); continue }
            tensors.append((t.name, t.shape, try out[t.name]?.values ?? model.floats(of: t)))
        }
        return MemorySource(path: "attacked", tensors: tensors)
    }

    static func maxRelativeError(_ aligned: any TensorSource, _ reference: SafetensorsModel, names: [String]) throws -> Double {
        var worst = 0.0
        var worstName = ""
        defer { if worst > 1e-5 { print("largest relative error: \(worstName) \(worst)") } }
        for n in names {
            let a = try aligned.decodeFloats(named: n), r = try reference.floats(of: reference.tensor(named: n)!)
            #expect(a.count == r.count, "\(n): \(a.count) values, reference \(r.count)")
            guard a.count == r.count else { return .infinity }
            var num = 0.0, den = 0.0
            for k in a.indices { num += pow(Double(a[k]) - Double(r[k]), 2); den += Double(r[k]) * Double(r[k]) }
            let e = (num / max(den, 1e-30)).squareRoot()
            if e > worst { worst = e; worstName = n }
        }
        return worst
    }

    @Test("MiniLM: FFN units and attention heads permuted in every layer are put back bit for bit; the unpermuted model is left alone",
          .enabled(if: Fixtures.miniLMAvailable))
    func miniLMPermutations() throws {
        let path = try #require(Fixtures.miniLM, "MiniLM missing: run `make model` (or set WEIGHTMARK_MINILM)")
        let original = try SafetensorsModel(path: path)
        var options = AlignOptions()
        options.config = ModelConfig.load(near: path)
        #expect(options.config?.heads == 12)
        let suspect = try Self.attacked(original, "permute:seed=3,permute-heads:heads=12,seed=4")
        let (aligned, report) = try ModelAligner.align(suspect: suspect, reference: original, options: options)
        #expect(report.layout == "bert" && report.changed)
        #expect(report.layers.count == 6)
        for l in report.layers {
            #expect(l.ffn.moved > 1400 && l.ffn.ambiguousCount == 0 && l.ffn.residualAfter == 0, "layer \(l.layer): \(l.ffn)")
            #expect((l.heads?.moved ?? 0) >= 8 && l.heads?.residualAfter == 0, "layer \(l.layer): \(String(describing: l.heads))")
        }
        let matrices = original.tensors.filter { $0.name.contains("encoder.layer") }.map(\.name)
        for n in matrices {
            #expect(try aligned.decodeFloats(named: n) == original.floats(of: original.tensor(named: n)!), "\(n) differs after alignment")
        }
        // The reference against itself: every group passes the cheap check, nothing is rewritten.
        let (same, sameReport) = try ModelAligner.align(suspect: original, reference: original, options: options)
        #expect(!sameReport.changed && same.overrides.isEmpty)
        #expect(sameReport.layers.allSatisfy { $0.ffn.identityByCheck && ($0.heads?.identityByCheck ?? false) })
    }

    @Test("Llama (SwiGLU, RMSNorm, grouped-query attention): rotation with fused norms, head and FFN permutation, unit rescaling with signs are undone")
    func llamaSymmetries() throws {
        let dir = Fixtures.temporaryDirectory("align-llama")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Positive norm weights 1 + 0.1·z, as trained RMSNorms have (Fixtures' defaults are zero-mean).
        let shape = LlamaShape(hidden: 256, layers: 2, ffn: 512, vocab: 1000, heads: 8, kvHeads: 2)
        try SyntheticWeights.write(shape: shape, dtype: .f32, shards: 1, seed: 5, to: dir + "/m", overwrite: false)
        let original = try SafetensorsModel(path: dir + "/m")
        var options = AlignOptions()
        options.config = ModelConfig.load(near: dir + "/m")
        #expect(options.config?.heads == 8 && options.config?.kvHeads == 2)
        let suspect = try Self.attacked(original, "rotate:seed=2,permute-heads:heads=8,kv=2,seed=3,permute:seed=4,scale-ffn:spread=4,seed=5")
        let (aligned, report) = try ModelAligner.align(suspect: suspect, reference: original, options: options)
        #expect(report.layout == "llama")
        let rotation = try #require(report.rotation)
        #expect(rotation.found && rotation.distanceFromIdentity > 0.5 && rotation.columnsRescaled > 200, "\(rotation)")
        for l in report.layers {
            #expect(l.ffn.moved > 480 && l.ffn.rescaled > 450 && l.ffn.signFlips > 150, "layer \(l.layer): \(l.ffn)")
            #expect((l.heads?.moved ?? 0) >= 4, "layer \(l.layer): \(String(describing: l.heads))")
        }
        let matrices = original.tensors.filter { $0.shape.count == 2 }.map(\.name)
        let error = try Self.maxRelativeError(aligned, original, names: matrices)
        #expect(error < 1e-4, "largest relative error after alignment \(error)")
    }

    @Test("dropped and duplicated FFN units: rectangular assignment leaves dropped units as erasures and merges a split unit")
    func droppedAndDuplicated() throws {
        let dir = Fixtures.temporaryDirectory("align-rect")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let shape = LlamaShape(hidden: 256, layers: 1, ffn: 512, vocab: 300, heads: 8, kvHeads: 8)
        try SyntheticWeights.write(shape: shape, dtype: .f32, shards: 1, seed: 9, to: dir + "/m", overwrite: false)
        let original = try SafetensorsModel(path: dir + "/m")
        let p = "model.layers.0.mlp."
        let gate = try original.floats(of: original.tensor(named: p + "gate_proj.weight")!)
        let up = try original.floats(of: original.tensor(named: p + "up_proj.weight")!)
        let down = try original.floats(of: original.tensor(named: p + "down_proj.weight")!)
        // Suspect units: reference units 0..<500 reversed (12 dropped), then 3 duplicates of units 7, 8, 9 whose output
        // columns carry 30% of the original's (the originals keep 70%).
        let d = 256, n = 512
        var order = Array((0..<500).reversed())
        let duplicates = [7, 8, 9]
        order += duplicates
        let units = order.count
        var g2 = [Float](), u2 = [Float](), d2 = [Float](repeating: 0, count: d * units)
        for (k, j) in order.enumerated() {
            g2 += gate[(j * d)..<((j + 1) * d)]; u2 += up[(j * d)..<((j + 1) * d)]
            let share: Float = duplicates.contains(j) ? (k >= 500 ? 0.3 : 0.7) : 1
            for i in 0..<d { d2[i * units + k] = down[i * n + j] * share }
        }
        let suspect = try Self.attacked(original, "permute:seed=0", extra: [
            p + "gate_proj.weight": ([units, d], g2), p + "up_proj.weight": ([units, d], u2), p + "down_proj.weight": ([d, units], d2)])
        var options = AlignOptions()
        options.config = ModelConfig.load(near: dir + "/m")
        let (aligned, report) = try ModelAligner.align(suspect: suspect, reference: original, options: options)
        let ffn = try #require(report.layers.first?.ffn)
        #expect(ffn.suspectUnits == 503 && ffn.referenceUnits == 512 && ffn.dropped == 12 && ffn.duplicated == 3 && ffn.extra == 0, "\(ffn)")
        let a = try aligned.decodeFloats(named: p + "down_proj.weight")
        #expect(a.count == d * n)
        for i in 0..<d {
            for j in 0..<n {
                let expected: Float = j < 500 ? down[i * n + j] : 0
                #expect(abs(a[i * n + j] - expected) <= 1e-6 * max(1, abs(expected)), "down[\(i), \(j)] = \(a[i * n + j]), expected \(expected)")
                if abs(a[i * n + j] - expected) > 1e-6 { return }
            }
        }
    }
}

/// A plain in-memory source for the tests (decodeFloats only).
final class MemorySource: TensorSource, @unchecked Sendable {
    // Immutable after init.
    let path: String
    let tensors: [String: (shape: [Int], values: [Float])]
    let order: [String]
    init(path: String, tensors: [(String, [Int], [Float])]) {
        self.path = path
        var t: [String: (shape: [Int], values: [Float])] = [:]
        for (n, s, v) in tensors { t[n] = (s, v) }
        self.tensors = t
        order = tensors.map(\.0)
    }
    var sourceTensors: [SourceTensor] { order.compactMap(sourceTensor(named:)) }
    func sourceTensor(named name: String) -> SourceTensor? { tensors[name].map { SourceTensor(name: name, shape: $0.shape, storage: "F32", isFloating: true) } }
    func decodeFloats(named name: String) throws -> [Float] {
        guard let t = tensors[name] else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        return t.values
    }
    func releaseTensor(named name: String) {}
}

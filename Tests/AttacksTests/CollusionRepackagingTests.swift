import Conversion
import Foundation
import Robustness
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport

/// A colluded personal copy that is then re-packaged still names a colluder and no innocent: the average of two
/// MiniLM copies (the same in-memory copies as `CollusionTraceTests`, made as `embed --recipients` makes them),
/// (a) converted to GGUF Q8_0 by the converter `weightmark convert` runs, (b) renamed and stored transposed,
/// (c) split by rows into two model-parallel shard files, each traced alone. Every case scores the 1,000 registered
/// recipients and 10,000 extra innocents through `Tracer` (the code `weightmark trace` runs), with the same checks
/// as `CollusionTraceTests`: at least one colluder accused, no innocent accused, the innocents' tail within the bound
/// (false-failure probability < 1e-7 per check).
@Suite("Traitor tracing through re-packaging on MiniLM", .enabled(if: Fixtures.miniLMAvailable, "MiniLM not fetched (make model)"))
struct CollusionRepackagingTests {
    /// The colluders: two registered recipients no other case uses.
    static func group(_ bench: CollusionBench) -> [String] { bench.colluders(2, case: 7) }

    /// The averaged copy as a whole model file (the original's other tensors as they were), next to MiniLM's
    /// config and vocabulary so that it converts like the original folder.
    static func writeAveragedModel(_ bench: CollusionBench, to dir: String) throws -> String {
        let averaged = bench.combined(colluders: group(bench), strategy: .average)
        let marked = Dictionary(uniqueKeysWithValues: averaged.map { ($0.name, $0.values) })
        let original = bench.original
        let tensors = try original.tensors.map { t -> OutputTensor in
            if let values = marked[t.name] {
                return OutputTensor(name: t.name, dtype: .f32, shape: t.shape, bytes: FloatConversion.encode(values, as: .f32))
            }
            return OutputTensor(name: t.name, dtype: t.dtype, shape: t.shape, bytes: try original.withBytes(of: t) { Array($0) })
        }
        let folder = (original.path as NSString).deletingLastPathComponent
        for file in ["config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
            try FileManager.default.copyItem(atPath: folder + "/" + file, toPath: dir + "/" + file)
        }
        let path = dir + "/model.safetensors"
        try SafetensorsWriter.write(tensors, metadata: [("format", "pt")], to: path, overwrite: false)
        return path
    }

    func check(_ p: CollusionPoint, _ label: String, alpha: Double) {
        print(String(format: "[repackaging] %@: owner Z %.1f, caught %d of %d, best colluder 10^%.1f, best innocent 10^%.2f, %d innocents, %.1f s",
                     label, p.ownerZ, p.caught, p.colluders, p.bestColluderLog10FamilyBound, p.bestInnocentLog10FamilyBound, p.innocentsScored, p.seconds))
        #expect(p.caught >= 1, "\(label): no colluder accused (best colluder family bound 10^\(p.bestColluderLog10FamilyBound))")
        #expect(p.innocentsAccused == 0, "\(label)")
        #expect(p.extraInnocentsOverThreshold == 0, "\(label)")
        #expect(p.bestInnocentLog10FamilyBound > log10(alpha), "\(label)")
        #expect(p.innocentsScored >= 10_000, "\(label)")
        for t in p.tail {
            #expect(t.count <= CollusionTraceTests.binomialLimit(n: p.innocentsScored, q: t.q), "\(label): \(t.count) innocents with bound ≤ \(t.q) of \(p.innocentsScored)")
        }
    }

    @Test("2 × average, then GGUF Q8_0 / renamed + transposed / two row shards: a colluder accused, no innocent")
    func repackaged() throws {
        let bench = try CollusionTraceTests.bench.get()
        let group = Self.group(bench)
        let dir = Fixtures.temporaryDirectory("trace-repack")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let averaged = try Self.writeAveragedModel(bench, to: dir)
        let selected = Set(bench.copies.names)

        // (a) GGUF Q8_0, as `weightmark convert --type Q8_0` writes it; read back by the reader `trace` opens files with.
        let gguf = dir + "/leak-Q8_0.gguf"
        _ = try GGUFConverter.convert(try SafetensorsModel(path: averaged), type: .q8_0, to: gguf, overwrite: false)
        check(try bench.trace(try openTensorSource(path: gguf), group: group, strategy: .average), "GGUF Q8_0", alpha: bench.alpha)

        // (b) Renamed and stored transposed (a re-packaging that keeps the function: y = x Wᵀ becomes y = x W).
        let model = try SafetensorsModel(path: averaged)
        var renamed: [(name: String, shape: [Int], values: [Float])] = []
        for (k, t) in model.tensors.enumerated() where selected.contains(t.name) {
            let (m, n) = (t.shape[0], t.shape[1])
            let v = try model.floats(of: t)
            var transposed = [Float](repeating: 0, count: m * n)
            for r in 0..<m { for c in 0..<n { transposed[c * m + r] = v[r * n + c] } }
            renamed.append(("w\(k).kernel", [n, m], transposed))
        }
        check(try bench.trace(InMemoryTensors(path: "renamed + transposed", tensors: renamed), group: group, strategy: .average),
              "renamed + transposed", alpha: bench.alpha)

        // (c) Model-parallel: every marked matrix split by rows into two halves, each half in its own file under the
        // original name; each shard is traced alone against the whole original.
        for shard in 0..<2 {
            var tensors: [OutputTensor] = []
            for t in model.tensors where selected.contains(t.name) {
                let (m, n) = (t.shape[0], t.shape[1])
                let rows = shard == 0 ? 0..<(m / 2) : (m / 2)..<m
                let v = try model.floats(of: t)
                tensors.append(OutputTensor(name: t.name, dtype: .f32, shape: [rows.count, n],
                                            bytes: FloatConversion.encode(Array(v[(rows.lowerBound * n)..<(rows.upperBound * n)]), as: .f32)))
            }
            let path = dir + "/shard-\(shard).safetensors"
            try SafetensorsWriter.write(tensors, metadata: nil, to: path, overwrite: false)
            check(try bench.trace(try openTensorSource(path: path), group: group, strategy: .average), "row shard \(shard + 1) of 2", alpha: bench.alpha)
        }
    }
}

import Attacks
import Foundation
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport

/// The committed robustness table (Benchmarks/Results/minilm-robustness-uniform.md, written by `make robustness`; the
/// README's summary comes from it), held at the shipped default strength (target Z 20, δ cap 5e-3, uniform shaping) on
/// the real MiniLM: marked as `weightmark embed` does, attacked as `weightmark attack` does (the attack catalog's spec
/// parser and runner, written to a file), detected as `weightmark detect` does (files opened with `openTensorSource`),
/// blind and informed. Thresholds are 0.85 × the table's value (measured with another key; the key changes blind Z by
/// about ±1, the H0 spread of Z) and detection at alpha 1e-6.
@Suite("Robustness at the default strength on MiniLM", .enabled(if: Fixtures.miniLMAvailable, "MiniLM not fetched (make model)"))
struct MiniLMRobustnessTests {
    static let key = WatermarkKey(secret: (0..<32).map { UInt8(($0 * 101 + 17) & 0xFF) })

    struct Point: CustomTestStringConvertible, Sendable {
        var spec: String
        /// The row of Benchmarks/Results/minilm-robustness-uniform.md (written by `make robustness`) it is held to.
        var family: String
        var attack: String
        var testDescription: String { spec }
    }

    static let points = [
        Point(spec: "int4:group=128", family: "int-k group 128", attack: "int4 g128"),
        Point(spec: "gguf:type=Q4_K", family: "gguf", attack: "Q4_K"),
        Point(spec: "prune:fraction=0.7", family: "magnitude pruning", attack: "prune 70%"),
        Point(spec: "noise:sigma=0.3", family: "noise", attack: "noise 0.3σ"),
    ]

    /// The committed table (format v2, uniform shaping, embed's defaults): the numbers' one home.
    static let table = Result { try CommittedResults.robustness("minilm-robustness-uniform.md") }

    /// The marked model, made once for all points: (folder, original path, marked path, δ).
    static let marked: Result<(dir: String, original: String, marked: String, delta: Double), any Error> = Result {
        let path = try #require(Fixtures.miniLM)
        let dir = Fixtures.temporaryDirectory("minilm-robust")
        let original = try SafetensorsModel(path: path)
        let options = EmbedOptions()
        let plan = try Embedder.plan(original, options: options)
        let manifest = try Embedder.embed(original, key: key, options: options, plan: plan, to: dir + "/marked.safetensors", overwrite: false)
        #expect(!plan.capped && manifest.tensors.count == 39)
        let tableDelta = try table.get().delta
        #expect(abs(plan.delta - tableDelta) < 0.01 * tableDelta, "δ \(plan.delta): the committed table was measured at \(tableDelta)")
        return (dir, path, dir + "/marked.safetensors", plan.delta)
    }

    /// Points finished; the last one removes the marked model. Read and written only under `finishedLock`.
    nonisolated(unsafe) static var finished = 0
    static let finishedLock = NSLock()

    @Test("detected blind and informed after the attack, at ≥ 0.85 × the README's Z", arguments: points)
    func survives(_ point: Point) throws {
        let setup = try Self.marked.get()
        let row = try #require(try Self.table.get().row(family: point.family, attack: point.attack),
                               "Benchmarks/Results/minilm-robustness-uniform.md has no row \(point.family) / \(point.attack)")
        defer {
            let last = Self.finishedLock.withLock { Self.finished += 1; return Self.finished == Self.points.count }
            if last { try? FileManager.default.removeItem(atPath: setup.dir) }
        }
        let start = Date()
        let marked = try SafetensorsModel(path: setup.marked)
        let original = try SafetensorsModel(path: setup.original)
        // As `weightmark attack` builds it (remarking is unused by these four attacks, but wired the same way).
        let delta = setup.delta
        let context = AttackContext(
            remark: { copy, name, rows, cols, values, scale in
                try Remarking.mark(copy: copy, name: name, rows: rows, cols: cols, values: &values, delta: delta * scale)
            },
            original: original, mergePartner: nil)
        let out = setup.dir + "/attacked-\(point.spec.replacingOccurrences(of: ":", with: "-")).safetensors"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let attacked = try AttackRunner.write(try AttackCatalog.chain(point.spec), to: marked, context: context,
                                              destination: out, overwrite: false)
        #expect(!attacked.isEmpty)
        let suspect = try openTensorSource(path: out)
        let blind = try Detector.detect(suspect: suspect, reference: nil, key: Self.key, options: DetectOptions())
        let informed = try Detector.detect(suspect: suspect, reference: try openTensorSource(path: setup.original),
                                           key: Self.key, options: DetectOptions())
        let seconds = Date().timeIntervalSince(start)
        print("robustness \(point.spec): blind Z \(String(format: "%.2f", blind.combinedZ)) (table \(row.blindZ)), "
              + "informed Z \(String(format: "%.2f", informed.combinedZ)) (table \(row.informedZ)), \(String(format: "%.1f", seconds)) s")
        #expect(blind.tensors.count == 39 && informed.tensors.count == 39)
        #expect(blind.detected, "\(point.spec): blind Z \(blind.combinedZ)")
        #expect(informed.detected, "\(point.spec): informed Z \(informed.combinedZ)")
        #expect(blind.combinedZ >= 0.85 * row.blindZ, "\(point.spec): blind Z \(blind.combinedZ) < 0.85 × \(row.blindZ)")
        #expect(informed.combinedZ >= 0.85 * row.informedZ,
                "\(point.spec): informed Z \(informed.combinedZ) < 0.85 × \(row.informedZ)")
    }
}

/// The committed tables parse without the model, so a change to the benchmark's table layout fails here, on every
/// machine, and not only where MiniLM was fetched.
@Suite("Committed robustness tables")
struct CommittedResultsTests {
    @Test("every robustness point's row is read, an aligned cell by its leading number")
    func rowsRead() throws {
        let table = try CommittedResults.robustness("minilm-robustness-uniform.md")
        for point in MiniLMRobustnessTests.points {
            let row = try #require(table.row(family: point.family, attack: point.attack), "no row \(point.family) / \(point.attack)")
            #expect(row.blindZ > 0 && row.informedZ > row.blindZ)
        }
        // "327.9 (unaligned 332.4)": the aligned value the column is named for.
        let permuted = try #require(table.row(family: "FFN permutation", attack: "permute FFN"))
        #expect(permuted.informedZ == 327.9)
        #expect(table.delta > 0)
    }
}

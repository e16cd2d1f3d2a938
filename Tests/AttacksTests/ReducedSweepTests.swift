import Foundation
import Testing
import Attacks
import Robustness
import TensorIO
import Watermarking
import WeightMarkTestSupport

@Suite("Reduced robustness sweep on a small model")
struct ReducedSweepTests {
    @Test("detected after int4 and 50% pruning (blind and informed); a wrong key detects nothing")
    func sweep() async throws {
        let dir = Fixtures.temporaryDirectory("sweep")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/m.safetensors")
        let original = try SafetensorsModel(path: dir + "/m.safetensors")
        let key = WatermarkKey(secret: (0..<32).map { UInt8($0 ^ 0x5A) })
        var options = EmbedOptions()
        options.strength = .relativeDistortion(0.02)
        options.maximumDistortion = 0.05
        let plan = try Embedder.plan(original, options: options)
        _ = try Embedder.embed(original, key: key, options: options, plan: plan, to: dir + "/w.safetensors", overwrite: false)
        let marked = try SafetensorsModel(path: dir + "/w.safetensors")
        let families = [
            SweepFamily(name: "int4", axis: "bits", points: [(4, "int4 g128", "int4:group=128")]),
            SweepFamily(name: "prune", axis: "fraction", points: [(0.5, "prune 50%", "prune:fraction=0.5")]),
        ]
        let points = try await SweepRunner(original: original, marked: marked, key: key, options: DetectOptions(), delta: plan.delta)
            .run(families)
        #expect(points.count == 2)
        for p in points {
            #expect(p.detectedBlind && p.detectedInformed, "\(p.label): blind \(p.blindZ), informed \(p.informedZ)")
            #expect(p.damage > 0)
        }
        let wrong = try await SweepRunner(original: original, marked: marked, key: WatermarkKey(secret: [UInt8](repeating: 0x5A, count: 32)), options: DetectOptions(), delta: plan.delta)
            .run(families)
        #expect(wrong.count == 2)
        for p in wrong { #expect(!p.detectedBlind && !p.detectedInformed, "\(p.label): blind \(p.blindZ), informed \(p.informedZ)") }
        // Renderings carry every point.
        #expect(SweepRendering.csv(points).split(separator: "\n").count == 3)
        #expect(SweepRendering.svg(points, families: families, alpha: 1e-6, title: "t").contains("<svg"))
        #expect(SweepRendering.markdown(points, title: "t", notes: []).contains("int4 g128"))
    }
}

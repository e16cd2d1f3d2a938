import Alignment
import Foundation
import LinearAlgebra
import Synthesis
import TensorIO
import Testing
import WeightMarkTestSupport

/// The shortcuts that make alignment of a large model fast return what the full computation returns.
@Suite("Alignment fast paths")
struct AlignmentFastPathTests {
    @Test("features wider than 512: the count-sketched search, verified on full rows, finds exactly what comparing whole features finds",
          arguments: ["permute-heads:heads=5,seed=3,permute:seed=4,scale-ffn:spread=4,seed=5",
                      "permute-heads:heads=5,seed=3,permute:seed=4,int4:group=64"])
    func sketchedSearchMatchesWholeFeatures(spec: String) throws {
        let dir = Fixtures.temporaryDirectory("align-sketch")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Hidden 640 > 512: up and gate rows and down columns are all sketched by default.
        let shape = LlamaShape(hidden: 640, layers: 1, ffn: 1024, vocab: 300, heads: 5, kvHeads: 5)
        try SyntheticWeights.write(shape: shape, dtype: .f32, shards: 1, seed: 11, to: dir + "/m", overwrite: false)
        let original = try SafetensorsModel(path: dir + "/m")
        let suspect = try AlignmentTests.attacked(original, spec)
        var sketched = AlignOptions()
        sketched.config = ModelConfig.load(near: dir + "/m")
        var whole = sketched
        whole.exactFeatureLimit = 1 << 20
        let (a, reportA) = try ModelAligner.align(suspect: suspect, reference: original, options: sketched)
        let (b, reportB) = try ModelAligner.align(suspect: suspect, reference: original, options: whole)
        let fa = try #require(reportA.layers.first?.ffn), fb = try #require(reportB.layers.first?.ffn)
        #expect(fa.moved > 1000 && fa.moved == fb.moved && fa.rescaled == fb.rescaled && fa.signFlips == fb.signFlips, "\(fa) vs \(fb)")
        #expect(fa.ambiguousCount == 0 && fb.ambiguousCount == 0)
        #expect(reportA.layers.first?.heads?.moved == reportB.layers.first?.heads?.moved)
        #expect(a.rewrittenNames == b.rewrittenNames && !a.rewrittenNames.isEmpty)
        for name in a.rewrittenNames.sorted() {
            // The same match and the same scales give bit-identical tensors.
            #expect(try a.decodeFloats(named: name) == b.decodeFloats(named: name), "\(name) differs between sketched and whole-feature search")
        }
        if spec.contains("scale-ffn") {
            let matrices = original.tensors.filter { $0.shape.count == 2 }.map(\.name)
            #expect(try AlignmentTests.maxRelativeError(a, original, names: matrices) < 1e-5)
        }
    }

    @Test("a gathered tensor (rows with divisors and erasures; columns with factors and merged duplicates) reads as its dense rewrite")
    func gatheredTensorsReadAsDense() throws {
        var rng = SplitMix64(seed: 3)
        let rows = 7, cols = 5
        let up = (0..<(rows * cols)).map { _ in rng.nextGaussian() }
        let down = (0..<(cols * rows)).map { _ in rng.nextGaussian() }       // cols × rows: units are columns
        let base = MemorySource(path: "base", tensors: [("up", [rows, cols], up), ("down", [cols, rows], down)])
        // Output unit j ← suspect unit src[j] (nil: dropped), up row ÷ c, down column × c, plus unit 6 merged into 0.
        let src: [Int?] = [3, nil, 0, 6, 1, 2, 4], c: [Float] = [2, 1, -0.5, 3, 1, 1.5, -1]
        let columns = (0..<rows).map { j -> [(column: Int, factor: Float)] in
            guard let i = src[j] else { return [] }
            return j == 0 ? [(i, c[j]), (5, 0.25)] : [(i, c[j])]
        }
        let aligned = AlignedTensors(base: base, overrides: [:], gathers: [
            "up": TensorGather(shape: [rows, cols], sourceColumns: cols, sources: .rows(src, divisors: c)),
            "down": TensorGather(shape: [cols, rows], sourceColumns: rows, sources: .columns(columns))])
        var expectedUp = [Float](repeating: 0, count: rows * cols), expectedDown = [Float](repeating: 0, count: cols * rows)
        for j in 0..<rows {
            guard let i = src[j] else { continue }
            for t in 0..<cols { expectedUp[j * cols + t] = up[i * cols + t] / c[j] }
            for r in 0..<cols {
                var x = down[r * rows + i] * c[j]
                if j == 0 { x = x + down[r * rows + 5] * 0.25 }
                expectedDown[r * rows + j] = x
            }
        }
        #expect(try aligned.decodeFloats(named: "up") == expectedUp)
        #expect(try aligned.decodeFloats(named: "down") == expectedDown)
        #expect(aligned.sourceTensor(named: "down")?.shape == [cols, rows] && aligned.rewrittenNames == ["up", "down"])
        // Any block of rows, as the detector reads them.
        var block = [Float](repeating: .nan, count: 2 * rows)
        try block.withUnsafeMutableBufferPointer { try aligned.decodeRows(named: "down", rows: 2..<4, into: $0) }
        #expect(block == Array(expectedDown[(2 * rows)..<(4 * rows)]))
        #expect(try aligned.withStoredRows(named: "up", rows: 0..<1, { _, _ in 0 }) == nil, "gathered rows are decoded, never read in place")
    }
}

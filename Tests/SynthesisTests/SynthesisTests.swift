import Foundation
import Testing
import Synthesis
import TensorIO
import WeightMarkTestSupport

@Suite("Synthetic models and stochastic rounding")
struct SynthesisTests {
    static let shape = LlamaShape(hidden: 128, layers: 2, ffn: 352, vocab: 500, heads: 4, kvHeads: 2)

    @Test("synth writes a sharded Hugging Face folder, deterministically, with Llama names and shapes")
    func layout() throws {
        let dir = Fixtures.temporaryDirectory("synth")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try SyntheticWeights.write(shape: Self.shape, dtype: .bf16, shards: 3, seed: 7, to: dir + "/a", overwrite: false)
        try SyntheticWeights.write(shape: Self.shape, dtype: .bf16, shards: 3, seed: 7, to: dir + "/b", overwrite: false)
        try SyntheticWeights.write(shape: Self.shape, dtype: .bf16, shards: 3, seed: 8, to: dir + "/c", overwrite: false)
        let a = try SafetensorsModel(path: dir + "/a")
        #expect(a.layout == .sharded && a.shards.count == 3)
        #expect(a.shardNames.first == "model-00001-of-00003.safetensors")
        #expect(a.parameterCount == Self.shape.parameterCount)
        #expect(a.tensor(named: "model.layers.1.self_attn.k_proj.weight")?.shape == [64, 128])
        #expect(a.tensor(named: "lm_head.weight")?.shape == [500, 128])
        #expect(FileManager.default.fileExists(atPath: dir + "/a/config.json"))
        for name in a.shardNames {
            let x = try Data(contentsOf: URL(fileURLWithPath: dir + "/a/" + name)), y = try Data(contentsOf: URL(fileURLWithPath: dir + "/b/" + name))
            #expect(x == y, "\(name) differs between two runs with the same seed")
        }
        let c = try SafetensorsModel(path: dir + "/c")
        #expect(try c.floats(of: c.tensor(named: "lm_head.weight")!) != (try a.floats(of: a.tensor(named: "lm_head.weight")!)))
    }

    @Test("weights are heavy-tailed with a per-row scale spread; norms sit near 1")
    func statistics() throws {
        let bytes = SyntheticWeights.bytes(name: "model.layers.0.mlp.up_proj.weight", shape: [1024, 1024], dtype: .f32, seed: 3)
        let w = bytes.withUnsafeBytes { FloatConversion.decode($0, dtype: .f32) }
        let n = Double(w.count)
        let m2 = w.reduce(0.0) { $0 + Double($1) * Double($1) } / n
        let m4 = w.reduce(0.0) { $0 + pow(Double($1), 4) } / n
        let kurtosis = m4 / (m2 * m2)
        #expect(kurtosis > 4 && kurtosis < 12, "kurtosis \(kurtosis)")
        #expect(abs(m2.squareRoot() - 1 / 32) < 0.2 / 32, "rms \(m2.squareRoot())") // 1/sqrt(fan_in) with row spread
        let rowRMS = (0..<1024).map { i in (w[(i * 1024)..<((i + 1) * 1024)].reduce(0.0) { $0 + Double($1) * Double($1) } / 1024).squareRoot() }
        let logs = rowRMS.map(log)
        let meanLog = logs.reduce(0, +) / 1024
        let sdLog = (logs.reduce(0.0) { $0 + ($1 - meanLog) * ($1 - meanLog) } / 1024).squareRoot()
        #expect(sdLog > 0.2 && sdLog < 0.4, "row log-scale spread \(sdLog)")
        let norm = SyntheticWeights.bytes(name: "model.norm.weight", shape: [4096], dtype: .f32, seed: 3)
            .withUnsafeBytes { FloatConversion.decode($0, dtype: .f32) }
        #expect(abs(norm.reduce(0, +) / 4096 - 1) < 0.01)
    }

    @Test("stochastic rounding lands on a neighbour and is unbiased, so sub-step perturbations survive on average")
    func stochasticRounding() {
        var rng = SplitMix64Stub(state: 99)
        for dtype in [DType.bf16, .f16] {
            // Values on the grid plus 1% of a step: round-to-nearest would erase the perturbation entirely.
            let base: [Float] = (0..<20000).map { i in
                let v = Float(i % 97 + 1) * 0.01
                return dtype == .bf16 ? FloatConversion.bf16ToFloat(FloatConversion.floatToBF16(v)) : Float(Float16(v))
            }
            let steps = base.map { v -> Float in
                dtype == .bf16 ? FloatConversion.bf16ToFloat(FloatConversion.floatToBF16(v) + 1) - v : Float(Float16(v).nextUp) - v
            }
            let perturbed = zip(base, steps).map { $0 + 0.01 * $1 }
            let nearest = FloatConversion.encode(perturbed, as: dtype).withUnsafeBytes { FloatConversion.decode($0, dtype: dtype) }
            #expect(nearest == base)
            let stored = FloatConversion.encodeStochastically(perturbed, as: dtype, using: &rng).withUnsafeBytes { FloatConversion.decode($0, dtype: dtype) }
            var moved = 0.0, expected = 0.0
            for i in base.indices {
                #expect(stored[i] == base[i] || stored[i] == base[i] + steps[i])
                moved += Double(stored[i] - base[i]); expected += Double(0.01 * steps[i])
            }
            // Binomial(20000, 0.01): the mean shift is within 6 standard deviations of the perturbation (false failure < 1e-8).
            #expect(abs(moved / expected - 1) < 6 * (0.99 / (0.01 * 20000)).squareRoot(), "\(dtype): \(moved / expected)")
        }
    }
}

struct SplitMix64Stub: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state }
}

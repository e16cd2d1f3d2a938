import Foundation
import LinearAlgebra
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport

/// Under H0 the combined Z is a unit-norm Rademacher sum: P(p_bound ≤ x) ≤ x, and Z ≈ N(0, 1).
///
/// 2,000 random keys on a fast stand-in model (the small model, decoded once). Both checks are set so a
/// correct implementation fails them with probability below 1e-6:
/// - the count of keys with p_bound ≤ 0.01 must not exceed the 1 − 1e-6 quantile of Binomial(2000, 0.01);
/// - the Kolmogorov–Smirnov distance to N(0, 1) must stay under the Dvoretzky–Kiefer–Wolfowitz bound
///   ε = sqrt(ln(2/1e-6) / (2n)) (P(D > ε) ≤ 2 exp(−2nε²) = 1e-6, Massart's constant). The Rademacher sum
///   is not exactly Gaussian, but with ~10⁴ terms its distance from N(0, 1) is far below ε.
@Suite("Calibration under H0")
struct CalibrationTests {
    static let keys = 2_000

    static func binomialUpperQuantile(n: Int, p: Double, tail: Double) -> Int {
        // Smallest k with P(X > k) < tail, by summing the pmf in log space.
        var cdf = 0.0
        for k in 0...n {
            let logPmf = lgamma(Double(n + 1)) - lgamma(Double(k + 1)) - lgamma(Double(n - k + 1))
                + Double(k) * log(p) + Double(n - k) * log1p(-p)
            cdf += exp(logPmf)
            if 1 - cdf < tail { return k }
        }
        return n
    }

    static func normalCDF(_ x: Double) -> Double { 0.5 * erfc(-x / 2.0.squareRoot()) }

    func zValues(suspect: [String: [Float]], shapes: [(String, [Int])]) throws -> [Double] {
        // Tiny gemms and QRs: OpenBLAS threads only add synchronization (4× slower here with 2 threads).
        BLASInfo.setThreadCount(1)
        let selected = shapes.filter { TensorSelection().selects(name: $0.0, dtype: .f32, shape: $0.1) }
        var rng = SystemRandomNumberGenerator()
        return try (0..<Self.keys).map { _ in
            let secret = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let evidence = try selected.map { name, shape in
                Detector.evidence(name: name, suspect: suspect[name]!, reference: nil, rows: shape[0], cols: shape[1],
                                  carriers: try Carriers.derive(secret: secret, tensor: name, rows: shape[0], cols: shape[1]))
            }
            return WatermarkStatistics.combinedZ(scores: evidence.map(\.z), weights: evidence.map(\.weight))
        }
    }

    func check(_ z: [Double], label: String) {
        let n = Double(z.count)
        let small = z.filter { WatermarkStatistics.log10HoeffdingBound($0) <= -2 }.count
        let limit = Self.binomialUpperQuantile(n: z.count, p: 0.01, tail: 1e-6)
        #expect(small <= limit, "\(label): \(small) of \(z.count) keys have p_bound ≤ 0.01 (limit \(limit))")
        let sorted = z.sorted()
        var d = 0.0
        for (i, v) in sorted.enumerated() {
            let f = Self.normalCDF(v)
            d = max(d, abs(Double(i + 1) / n - f), abs(Double(i) / n - f))
        }
        let epsilon = (log(2 / 1e-6) / (2 * n)).squareRoot()
        #expect(d < epsilon, "\(label): KS distance \(d) ≥ \(epsilon)")
        #expect(!z.contains { WatermarkStatistics.log10HoeffdingBound($0) <= -6 }, "\(label): a random key was 'detected'")
    }

    @Test("random keys on an unmarked model: p_bound is conservative and Z ~ N(0, 1)")
    func unmarked() throws {
        let dir = Fixtures.temporaryDirectory("calib")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let values = try Fixtures.writeSmallModel(to: dir + "/m.safetensors", seed: 99)
        check(try zValues(suspect: values, shapes: Fixtures.smallModelShapes), label: "unmarked")
    }

    @Test("random keys on a model marked with another key: still calibrated")
    func otherKeyMarked() throws {
        let dir = Fixtures.temporaryDirectory("calib2")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/m.safetensors", seed: 99)
        let model = try SafetensorsModel(path: dir + "/m.safetensors")
        var options = EmbedOptions()
        options.strength = .relativeDistortion(0.05)
        options.maximumDistortion = 0.05
        _ = try Embedder.embed(model, key: WatermarkKey.generate(), options: options,
                               plan: Embedder.plan(model, options: options), to: dir + "/w.safetensors", overwrite: false)
        let marked = try SafetensorsModel(path: dir + "/w.safetensors")
        var values: [String: [Float]] = [:]
        for t in marked.tensors where t.shape.count == 2 { values[t.name] = try marked.floats(of: t) }
        check(try zValues(suspect: values, shapes: Fixtures.smallModelShapes), label: "other-key marked")
    }
}

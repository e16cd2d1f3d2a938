import Foundation
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport

/// Calibration under H0 through the hub quantizers' readers (`QuantizedSafetensors`), as `CalibrationTests` does it
/// for the other containers: the unmarked small Llama of `CalibrationTests` written by the real libraries
/// (`Tests/Oracles/hub_quant.py`: MLX affine 4-bit through `mlx_lm.convert`, LLM.int8 through transformers and
/// bitsandbytes), 2,000 keys each, opened with `openTensorSource` and scored by `Detector.detect` (format v2, blind).
/// Checks, as there: no key detected at 1e-6 (pinned seed), #{Z ≥ t} and #{Z ≤ −t} for t = 2, 3, 4 under the
/// Binomial(2000, exp(−t²/2)) quantile at `CalibrationTests.perCheckTail`, mean Z² in [0.7, 1.35].
@Suite("Calibration under H0 through the hub quantizers' readers", .serialized,
       .enabled(if: Fixtures.oraclesAvailable, "Python oracle venv not installed (make venv)"))
struct HubCalibrationTests {
    static let oracle = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Oracles/hub_quant.py").path

    static let files: Result<String, any Error> = Result {
        let python = try #require(Fixtures.python, "no Python oracle: run `make venv` or set WEIGHTMARK_PYTHON")
        let dir = Fixtures.temporaryDirectory("hub-calibration")
        try Fixtures.writeSmallLlama(to: dir + "/f32", seed: 5, layers: 1, hidden: 256, ffn: 256, vocab: 288, dtype: .f32)
        _ = try Fixtures.run(python, [oracle, "mlx", dir + "/f32", dir + "/mlx4", "4", "64"])
        _ = try Fixtures.run(python, [oracle, "bnb8", dir + "/f32", dir + "/int8"])
        return dir
    }

    @Test("random keys: no detection, tails under exp(−z²/2), E[Z²] = 1",
          arguments: [("mlx4", "MLX affine q4 g64"), ("int8", "bitsandbytes LLM.int8")])
    func calibrated(folder: String, storage: String) throws {
        let dir = try Self.files.get()
        let suspect = try openTensorSource(path: dir + "/" + folder)
        let selected = suspect.sourceTensors.filter { TensorSelection().selects($0) }
        #expect(selected.contains { $0.storage == storage }, "\(folder): \(selected.map(\.storage))")
        #expect(ReadCoverage.of(suspect, selection: TensorSelection()).unreadTensors == 0)
        let label = "\(folder) (\(storage)), seed \(CalibrationTests.seed)"
        var options = DetectOptions()
        options.format = .v2
        var z: [Double] = []
        var detected: [Int] = []
        let start = Date()
        for k in 0..<CalibrationTests.keys {
            let r = try Detector.detect(suspect: suspect, reference: nil, key: WatermarkKey(secret: CalibrationTests.secret(k)), options: options)
            if k == 0 { #expect(r.tensors.count == selected.count && r.skipped.isEmpty, "\(label): \(r.tensors.count) tensors, skipped \(r.skipped)") }
            z.append(r.combinedZ)
            if r.detected { detected.append(k) }
        }
        #expect(z.allSatisfy { $0.isFinite })
        #expect(detected.isEmpty, "\(label): keys \(detected) detected")
        for t in [2.0, 3.0, 4.0] {
            let limit = CalibrationTests.binomialUpperQuantile(n: z.count, p: exp(-t * t / 2), tail: CalibrationTests.perCheckTail)
            #expect(z.filter { $0 >= t }.count <= limit, "\(label): #Z ≥ \(t) above \(limit)")
            #expect(z.filter { $0 <= -t }.count <= limit, "\(label): #Z ≤ −\(t) above \(limit)")
        }
        let meanSquare = z.reduce(0) { $0 + $1 * $1 } / Double(z.count)
        #expect(meanSquare >= 0.7 && meanSquare <= 1.35, "\(label): mean Z² = \(meanSquare)")
        print("hub calibration \(label): \(z.count) keys, \(selected.count) matrices, in \(String(format: "%.1f", Date().timeIntervalSince(start))) s; mean Z² \(String(format: "%.3f", meanSquare)), max \(String(format: "%.2f", z.max()!)), min \(String(format: "%.2f", z.min()!))")
    }
}

import Foundation
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport

/// The real model at default strength (target Z 20, uniform shaping).
@Suite("MiniLM watermark (real model)", .enabled(if: Fixtures.miniLMAvailable, "MiniLM not fetched (make model)"))
struct MiniLMWatermarkTests {
    static let key = WatermarkKey(secret: (0..<32).map { UInt8(($0 * 13 + 5) & 0xFF) })

    /// A copy of `source` with every float tensor cast to `dtype` (round to nearest even).
    static func cast(_ source: SafetensorsModel, to dtype: DType, at path: String) throws {
        try ModelWriter.write(like: source, to: path, overwrite: false) { t in
            guard t.dtype.isSupportedFloat else { return nil }
            return OutputTensor(name: t.name, dtype: dtype, shape: t.shape,
                                bytes: FloatConversion.encode(try source.floats(of: t), as: dtype))
        }
    }

    @Test("default strength: δ ≤ 5e-3, blind Z ≥ 15, informed Z ≥ 100; original and wrong key not detected")
    func defaultStrength() throws {
        let path = try #require(Fixtures.miniLM)
        let dir = Fixtures.temporaryDirectory("minilm-wm")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let original = try SafetensorsModel(path: path)
        let options = EmbedOptions()
        let plan = try Embedder.plan(original, options: options)
        #expect(plan.entries.count == 39)
        #expect(!plan.capped)
        let manifest = try Embedder.embed(original, key: Self.key, options: options, plan: plan,
                                          to: dir + "/marked.safetensors", overwrite: false)
        #expect(manifest.tensors.count == 39)
        #expect(manifest.tensors.allSatisfy { $0.measuredDelta <= 5e-3 })
        let marked = try SafetensorsModel(path: dir + "/marked.safetensors")
        let blind = try Detector.detect(suspect: marked, reference: nil, key: Self.key, options: DetectOptions())
        #expect(blind.combinedZ >= 15, "blind Z \(blind.combinedZ)")
        #expect(blind.detected)
        let informed = try Detector.detect(suspect: marked, reference: original, key: Self.key, options: DetectOptions())
        #expect(informed.combinedZ >= 100, "informed Z \(informed.combinedZ)")
        let clean = try Detector.detect(suspect: original, reference: nil, key: Self.key, options: DetectOptions())
        #expect(!clean.detected && abs(clean.combinedZ) < 5.3) // |Z| > 5.3 has probability < 1e-6 under H0
        let wrong = try Detector.detect(suspect: marked, reference: original, key: WatermarkKey(secret: [UInt8](repeating: 0x5A, count: 32)), options: DetectOptions())
        #expect(!wrong.detected && abs(wrong.combinedZ) < 5.3)
    }

    @Test("f16 and bf16 copies keep their dtype when marked and are still detected", arguments: [DType.f16, .bf16])
    func halfPrecision(_ dtype: DType) throws {
        let path = try #require(Fixtures.miniLM)
        let dir = Fixtures.temporaryDirectory("minilm-\(dtype.rawValue)")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.cast(try SafetensorsModel(path: path), to: dtype, at: dir + "/half.safetensors")
        let half = try SafetensorsModel(path: dir + "/half.safetensors")
        let options = EmbedOptions()
        let manifest = try Embedder.embed(half, key: Self.key, options: options, plan: Embedder.plan(half, options: options),
                                          to: dir + "/marked.safetensors", overwrite: false)
        #expect(manifest.tensors.allSatisfy { $0.measuredDelta <= 5e-3 }, "max δ \(manifest.tensors.map(\.measuredDelta).max() ?? 0)")
        let marked = try SafetensorsModel(path: dir + "/marked.safetensors")
        #expect(marked.tensors.map(\.dtype) == half.tensors.map(\.dtype))
        let blind = try Detector.detect(suspect: marked, reference: nil, key: Self.key, options: DetectOptions())
        #expect(blind.detected && blind.combinedZ >= 15, "blind Z \(blind.combinedZ)")
        let informed = try Detector.detect(suspect: marked, reference: half, key: Self.key, options: DetectOptions())
        #expect(informed.combinedZ >= 100, "informed Z \(informed.combinedZ)")
    }
}

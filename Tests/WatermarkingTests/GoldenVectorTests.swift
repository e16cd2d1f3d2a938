import Foundation
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport

/// Golden vectors of detection format v1. If one of these changes, marks already released can no longer
/// be detected: that is a format-version change, never a test to update.
///
/// The file was produced once by this suite with WEIGHTMARK_WRITE_GOLDEN=1.
@Suite("Golden vectors (format v1)")
struct GoldenVectorTests {
    static let secret = (0..<32).map { UInt8($0) }
    static let tensor = "golden.weight"
    static let shape = [96, 80]

    struct Golden: Codable {
        var formatVersion: Int
        var secret: String
        var keyId: String
        var subkeyCarrierA: String
        var uniforms: [Double]
        var gaussians: [Double]
        var signs: [Float]
        var carrierAColumn0: [Float]
        var carrierBColumn0: [Float]
        var patternRow0: [Float]
        var smallModel: SmallModel
        struct SmallModel: Codable {
            var delta: Double
            var blindZUniform: Double
            var informedZUniform: Double
            var blindZMagnitude: Double
        }
    }

    static func compute() throws -> Golden {
        let key = WatermarkKey(secret: secret)
        let info = KeyedGenerator.info(purpose: "carrier-A", tensor: tensor, shape: shape)
        var g = KeyedGenerator(secret: secret, purpose: "carrier-A", tensor: tensor, shape: shape)
        let uniforms = (0..<4).map { _ in g.nextUniform() }
        var g2 = KeyedGenerator(secret: secret, purpose: "carrier-A", tensor: tensor, shape: shape)
        let gaussians = (0..<6).map { _ in g2.nextGaussian() }
        var g3 = KeyedGenerator(secret: secret, purpose: "pattern-S", tensor: tensor, shape: shape)
        let signs = (0..<16).map { _ in g3.nextSign() }
        let c = try Carriers.derive(secret: secret, tensor: tensor, rows: 96, cols: 80, rank: 8)

        let dir = Fixtures.temporaryDirectory("golden")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let original = dir + "/model.safetensors"
        try Fixtures.writeSmallModel(to: original, seed: 42)
        let model = try SafetensorsModel(path: original)
        var z: [Double] = []
        for shaping in [WatermarkShaping.uniform, .magnitude] {
            var options = EmbedOptions()
            options.shaping = shaping
            options.strength = .relativeDistortion(4e-3)
            let plan = try Embedder.plan(model, options: options)
            let out = dir + "/\(shaping.rawValue).safetensors"
            _ = try Embedder.embed(model, key: key, options: options, plan: plan, to: out, overwrite: false)
            let marked = try SafetensorsModel(path: out)
            z.append(try Detector.detect(suspect: marked, reference: nil, key: key, options: DetectOptions()).combinedZ)
            if shaping == .uniform {
                z.append(try Detector.detect(suspect: marked, reference: model, key: key, options: DetectOptions()).combinedZ)
            }
        }
        return Golden(formatVersion: WatermarkFormat.version, secret: hex(secret), keyId: key.id,
                      subkeyCarrierA: hex(KeyedGenerator.subkey(secret: secret, info: info)),
                      uniforms: uniforms, gaussians: gaussians, signs: signs,
                      carrierAColumn0: (0..<6).map { c.a[$0, 0] }, carrierBColumn0: (0..<6).map { c.b[$0, 0] },
                      patternRow0: (0..<8).map { c.s[0, $0] },
                      smallModel: .init(delta: 4e-3, blindZUniform: z[0], informedZUniform: z[1], blindZMagnitude: z[2]))
    }

    @Test("derivation, generator, carriers and the Z of a deterministic model match the committed v1 vectors")
    func matchesCommitted() throws {
        let url = goldenURL("v1.json")
        let now = try Self.compute()
        if ProcessInfo.processInfo.environment["WEIGHTMARK_WRITE_GOLDEN"] == "1" {
            let e = JSONEncoder()
            e.outputFormatting = [.prettyPrinted, .sortedKeys]
            try e.encode(now).write(to: url)
            return
        }
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: url))
        #expect(golden.formatVersion == WatermarkFormat.version)
        // Exact: pure integer/crypto paths.
        #expect(now.keyId == golden.keyId)
        #expect(now.subkeyCarrierA == golden.subkeyCarrierA)
        #expect(now.uniforms == golden.uniforms)
        #expect(now.signs == golden.signs)
        #expect(now.patternRow0 == golden.patternRow0)
        // Tolerance: libm and BLAS/LAPACK kernels may differ in the last bits across machines.
        for (a, b) in zip(now.gaussians, golden.gaussians) { #expect(abs(a - b) <= 1e-12 * max(1, abs(b))) }
        for (a, b) in zip(now.carrierAColumn0 + now.carrierBColumn0, golden.carrierAColumn0 + golden.carrierBColumn0) {
            #expect(abs(a - b) <= 1e-5)
        }
        let s = now.smallModel, gs = golden.smallModel
        #expect(abs(s.blindZUniform - gs.blindZUniform) <= 1e-3 * abs(gs.blindZUniform))
        #expect(abs(s.informedZUniform - gs.informedZUniform) <= 1e-3 * abs(gs.informedZUniform))
        #expect(abs(s.blindZMagnitude - gs.blindZMagnitude) <= 1e-3 * abs(gs.blindZMagnitude))
    }
}

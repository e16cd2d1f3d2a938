import Crypto
import Evidence
import Foundation
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport

/// The ambiguity attack the commitment defends against: search many keys against a model that was never marked,
/// keep the best score, and present it as a detection.
@Suite("Key-search forgery")
struct KeySearchForgeryTests {
    static let keysTried = 10_000

    @Test("the best of 10⁴ keys on an unmarked model scores well, but with the search paid for and no commitment it is not detected")
    func forgery() throws {
        let dir = Fixtures.temporaryDirectory("forgery")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/unmarked.safetensors"
        try Fixtures.writeSmallModel(to: path, seed: 7, shapes: [("layers.0.mlp.up_proj.weight", [256, 512])])
        let model = try SafetensorsModel(path: path)
        var options = DetectOptions()
        options.format = .v2 // the forger's fastest path: blind, one format
        options.workers = 1
        // Deterministic keys (SHA-256 of a counter), so a failure reproduces.
        func key(_ i: Int) -> WatermarkKey {
            WatermarkKey(secret: Array(SHA256.hash(data: Array("forgery key \(i)".utf8))))
        }
        var best: (z: Double, index: Int) = (-.infinity, -1)
        for i in 0..<Self.keysTried {
            let r = try Detector.detect(suspect: model, reference: nil, key: key(i), options: options)
            if r.combinedZ > best.z { best = (r.combinedZ, i) }
        }
        // The winning key, reported through the same path the CLI uses.
        var report = try Detector.detect(suspect: model, reference: nil, key: key(best.index), options: options)
        report.keyCommitment = try DetectionKey.resolve(owner: key(best.index), releaseID: nil, opening: nil, manifest: nil).status
        // Under H0 the 10⁴ scores are Rademacher sums with unit coefficient norm; the best exceeds z = 2.63 (single-key
        // bound 10^-1.5) unless all 10⁴ stay below it: probability ≤ (1 − 4e-3)^10⁴ < 1e-17. It reaches z = 6.8
        // (corrected bound ≤ 1e-6) with probability ≤ 10⁴ · exp(−6.8²/2) < 1e-6.
        #expect(report.log10PValueBound < -1.5, "the search found a key with single-key bound 10^\(report.log10PValueBound) (Z \(best.z))")
        let corrected = KeySearch.correctedLog10Bound(report, keysTried: Self.keysTried)
        #expect(abs(corrected - min(0, report.log10PValueBound + 4)) < 1e-12)
        #expect(!KeySearch.isDetected(report, keysTried: Self.keysTried), "corrected bound 10^\(corrected)")
        #expect(report.keyCommitment?.committed == false && report.keyCommitment?.note == DetectionKey.caution)
    }
}

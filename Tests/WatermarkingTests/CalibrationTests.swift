import Conversion
import Foundation
import LinearAlgebra
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport

/// Under H0 the combined Z is a Rademacher sum with a unit-norm coefficient vector, so for every z ≥ 0
/// `P(Z ≥ z) ≤ exp(−z²/2)` and `P(Z ≤ −z) ≤ exp(−z²/2)` (Hoeffding), and `E[Z²] = 1` exactly.
///
/// 2,000 random keys per case, each detected exactly as `weightmark detect` does it: the files are opened with
/// `openTensorSource(path:)` and scored by `Detector.detect`, i.e. the streamed row-block path with the C
/// kernels (bf16 and f32 read in place; GGUF blocks dequantized and llama.cpp's q/k row permutation undone;
/// informed residuals with erasure masking). Cases: bf16 and f32 safetensors and a Q4_0 GGUF conversion of an
/// unmarked small Llama, blind; informed against the unmarked original, the Q4_0 copy of the original (unmarked,
/// quantization noise only) and a copy marked with another key at the shipped default strength.
///
/// Checks per case, and the family's false-failure probability:
/// - no key is "detected" at alpha 1e-6. For a fresh random seed the 10,000 keys would give at least one
///   detection with probability ≤ 10⁴ · 1e-6 = 1e-2 (Hoeffding; ≈ 7e-4 if Z were exactly Gaussian), which is
///   why the keys come from a pinned seed unless `WEIGHTMARK_CALIBRATION_SEED` says otherwise (a number, or
///   `random`); the seed is printed on every run and in every failure, so any failure reproduces.
/// - the empirical tails: #{Z ≥ z} and #{Z ≤ −z} for z = 2, 3, 4 stay at or below the quantile of
///   Binomial(2000, exp(−z²/2)) with upper tail `perCheckTail` (the count is stochastically smaller than
///   that binomial under H0, by the bound above);
/// - the mean of Z² lies in [0.7, 1.35]: Z² − 1 ≥ −1 with variance ≤ 2 (E Z⁴ ≤ 3) bounds the lower side by
///   Bernstein, exp(−n·0.09/(2·(2 + 0.1))) ≈ 2e-19; Z sub-Gaussian with variance proxy 1 makes Z² − 1
///   sub-exponential with parameters (4, 4) like χ²₁ − 1, bounding the upper side by
///   exp(−n·0.35²/(2·(4 + 4·0.35))) ≈ 1.4e-10. This side catches a detector that is too conservative (Z
///   shrunk), which the tail checks cannot.
/// Each case runs one format (`--format v1` or `v2`): each format's Z is the Rademacher sum above; `auto`
/// reports the larger of the two with the bound doubled. Format v2 is also calibrated on re-packaged copies (all
/// matrices transposed; q/k/v fused), where its pilots choose among the re-packaging hypotheses before scoring.
/// 9 cases × 7 checks = 63 statistical checks at ≤ 1.6e-8 each: the family fails falsely with probability
/// below 1e-6 for any seed (the zero-detection check aside, see above).
@Suite("Calibration under H0 through the CLI's detection path")
struct CalibrationTests {
    static let keys = 2_000
    static let checks = 63
    static let perCheckTail = 1e-6 / Double(checks)

    /// The pinned seed `make test` uses, or `WEIGHTMARK_CALIBRATION_SEED` (a number, or `random`).
    static let seed: UInt64 = {
        switch ProcessInfo.processInfo.environment["WEIGHTMARK_CALIBRATION_SEED"] {
        case "random"?: return UInt64.random(in: 0...UInt64.max)
        case let s? where UInt64(s) != nil: return UInt64(s)!
        default: return 0xCA11_B4A7_E5EE_D001
        }
    }()

    /// Secrets of key k (0 ≤ k < keys), from the seed.
    static func secret(_ k: Int) -> [UInt8] {
        var rng = SplitMix64(seed: seed &+ UInt64(k) &* 0x9E37_79B9_7F4A_7C15)
        var out: [UInt8] = []
        for _ in 0..<4 { withUnsafeBytes(of: rng.next().littleEndian) { out.append(contentsOf: $0) } }
        return out
    }

    enum Case: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case v1BlindBF16 = "v1, blind, bf16 safetensors (unmarked)"
        case v1InformedOtherKey = "v1, informed, bf16 marked (v1) with another key at default strength against the bf16 original"
        case blindBF16 = "v2, blind, bf16 safetensors (unmarked)"
        case blindF32 = "v2, blind, f32 safetensors (unmarked)"
        case blindGGUF = "v2, blind, Q4_0 GGUF (unmarked)"
        case informedGGUF = "v2, informed, Q4_0 GGUF of the original against the f32 original"
        case informedOtherKey = "v2, informed, bf16 marked with another key at default strength against the bf16 original"
        case blindTransposed = "v2, blind, every matrix stored transposed (unmarked)"
        case blindFused = "v2, blind, q/k/v fused into one matrix (unmarked)"
        var testDescription: String { rawValue }
        var format: MarkVersionSearch { self == .v1BlindBF16 || self == .v1InformedOtherKey ? .v1 : .v2 }
    }

    /// The files, written once for all cases: a one-layer Llama (hidden 256, FFN 256, vocab 288) with 7 selected
    /// matrices of 65,536 or 73,728 weights (475,136 in all; k and v, 128×256, are below the selection's size), in
    /// f32 and bf16, its Q4_0 GGUF conversion, and a bf16 copy marked with another key.
    struct Files: Sendable {
        var dir: String
        var f32Folder: String { dir + "/f32" }
        var bf16Folder: String { dir + "/bf16" }
        var f32: String { f32Folder + "/model.safetensors" }
        var bf16: String { bf16Folder + "/model.safetensors" }
        var gguf: String { dir + "/q4_0.gguf" }
        var otherKeyMarked: String { dir + "/bf16-other-key.safetensors" }
        var otherKeyMarkedV1: String { dir + "/bf16-other-key-v1.safetensors" }
        var transposed: String { dir + "/bf16-transposed.safetensors" }
        var fused: String { dir + "/bf16-fused.safetensors" }
    }

    static let files: Result<Files, any Error> = Result {
        let files = Files(dir: Fixtures.temporaryDirectory("calibration"))
        let shape = (layers: 1, hidden: 256, ffn: 256, vocab: 288)
        try Fixtures.writeSmallLlama(to: files.f32Folder, seed: 5, layers: shape.layers, hidden: shape.hidden, ffn: shape.ffn,
                                     vocab: shape.vocab, dtype: .f32)
        try Fixtures.writeSmallLlama(to: files.bf16Folder, seed: 5, layers: shape.layers, hidden: shape.hidden, ffn: shape.ffn,
                                     vocab: shape.vocab, dtype: .bf16)
        _ = try GGUFConverter.convert(SafetensorsModel(path: files.f32Folder), type: .q4_0, to: files.gguf, overwrite: false)
        let original = try SafetensorsModel(path: files.bf16)
        let options = EmbedOptions()
        let other = WatermarkKey(secret: (0..<32).map { UInt8(($0 * 29 + 3) & 0xFF) })
        _ = try Embedder.embed(original, key: other, options: options, plan: Embedder.plan(original, options: options),
                               to: files.otherKeyMarked, overwrite: false)
        var v1 = EmbedOptions()
        v1.format = .v1
        _ = try Embedder.embed(original, key: other, options: v1, plan: Embedder.plan(original, options: v1),
                               to: files.otherKeyMarkedV1, overwrite: false)
        // Re-packaged copies of the unmarked bf16 model.
        var transposed: [OutputTensor] = [], fused: [OutputTensor] = []
        for t in original.tensors {
            let v = try original.floats(of: t)
            if t.shape.count == 2 {
                transposed.append(OutputTensor(name: "t." + t.name, dtype: .bf16, shape: [t.shape[1], t.shape[0]],
                                               bytes: FloatConversion.encode(Matrix(rows: t.shape[0], cols: t.shape[1], storage: v).transposed.storage, as: .bf16)))
            }
            if t.name.hasSuffix("q_proj.weight") {
                let p = String(t.name.dropLast("q_proj.weight".count))
                let k = try original.floats(of: original.tensor(named: p + "k_proj.weight")!)
                let vv = try original.floats(of: original.tensor(named: p + "v_proj.weight")!)
                fused.append(OutputTensor(name: p + "qkv_proj.weight", dtype: .bf16, shape: [t.shape[0] + 256, t.shape[1]],
                                          bytes: FloatConversion.encode(v + k + vv, as: .bf16)))
            } else if !t.name.hasSuffix("k_proj.weight") && !t.name.hasSuffix("v_proj.weight") {
                fused.append(OutputTensor(name: t.name, dtype: .bf16, shape: t.shape, bytes: FloatConversion.encode(v, as: .bf16)))
            }
        }
        try SafetensorsWriter.write(transposed, metadata: nil, to: files.transposed, overwrite: false)
        try SafetensorsWriter.write(fused, metadata: nil, to: files.fused, overwrite: false)
        return files
    }

    /// Cases finished; the last one removes the files.
    /// Read and written only under `finishedLock`.
    nonisolated(unsafe) static var finished = 0
    static let finishedLock = NSLock()

    static func caseFinished() {
        let all = finishedLock.withLock { finished += 1; return finished == Case.allCases.count }
        if all, let files = try? files.get() { try? FileManager.default.removeItem(atPath: files.dir) }
    }

    /// Upper quantile of Binomial(n, p): the smallest k with P(X > k) ≤ tail (tail summed from the top, in log space).
    static func binomialUpperQuantile(n: Int, p: Double, tail: Double) -> Int {
        guard p < 1 else { return n }
        var above = 0.0
        for k in stride(from: n, through: 0, by: -1) {
            let logPmf = lgamma(Double(n + 1)) - lgamma(Double(k + 1)) - lgamma(Double(n - k + 1))
                + Double(k) * log(p) + Double(n - k) * log1p(-p)
            // `above` is P(X > k); once adding pmf(k) would exceed the tail, k is the quantile.
            if above + exp(logPmf) > tail { return k }
            above += exp(logPmf)
        }
        return 0
    }

    @Test("random keys: no detection, tails under exp(−z²/2), E[Z²] = 1", arguments: Case.allCases)
    func calibrated(_ c: Case) throws {
        let files = try Self.files.get()
        defer { Self.caseFinished() }
        let (suspectPath, referencePath): (String, String?) = switch c {
        case .v1BlindBF16, .blindBF16: (files.bf16, nil)
        case .v1InformedOtherKey: (files.otherKeyMarkedV1, files.bf16)
        case .blindTransposed: (files.transposed, nil)
        case .blindFused: (files.fused, nil)
        case .blindF32: (files.f32, nil)
        case .blindGGUF: (files.gguf, nil)
        case .informedGGUF: (files.gguf, files.f32)
        case .informedOtherKey: (files.otherKeyMarked, files.bf16)
        }
        let suspect = try openTensorSource(path: suspectPath)
        let reference = try referencePath.map { try openTensorSource(path: $0) }
        // The case is what its label says: how the selected matrices are stored in the suspect.
        let storage = Set(suspect.sourceTensors.filter { TensorSelection().selects($0) }.map(\.storage))
        switch c {
        case .blindBF16, .informedOtherKey, .v1BlindBF16, .v1InformedOtherKey, .blindTransposed, .blindFused: #expect(storage == ["BF16"], "\(storage)")
        case .blindF32: #expect(storage == ["F32"], "\(storage)")
        case .blindGGUF, .informedGGUF: #expect(storage.contains("Q4_0"), "\(storage)")
        }
        let label = "\(c.rawValue), seed \(Self.seed) (rerun with WEIGHTMARK_CALIBRATION_SEED=\(Self.seed))"
        let start = Date()
        var z: [Double] = []
        var detected: [Int] = []
        var options = DetectOptions()
        options.format = c.format
        let expectedTensors = 7
        for k in 0..<Self.keys {
            let r = try Detector.detect(suspect: suspect, reference: reference, key: WatermarkKey(secret: Self.secret(k)),
                                        options: options)
            if k == 0 {
                #expect(r.tensors.count == expectedTensors && r.skipped.isEmpty && r.formatVersion == (c.format == .v1 ? 1 : 2),
                        "\(label): \(r.tensors.count) tensors, skipped \(r.skipped)")
            }
            z.append(r.combinedZ)
            if r.detected { detected.append(k) }
        }
        let seconds = Date().timeIntervalSince(start)
        #expect(z.allSatisfy { $0.isFinite }, "\(label): non-finite Z")
        #expect(detected.isEmpty, "\(label): keys \(detected) 'detected' (Z \(detected.map { z[$0] }))")
        let n = Double(z.count)
        for t in [2.0, 3.0, 4.0] {
            let limit = Self.binomialUpperQuantile(n: z.count, p: exp(-t * t / 2), tail: Self.perCheckTail)
            let upper = z.filter { $0 >= t }.count, lower = z.filter { $0 <= -t }.count
            #expect(upper <= limit, "\(label): \(upper) keys with Z ≥ \(t), limit \(limit)")
            #expect(lower <= limit, "\(label): \(lower) keys with Z ≤ −\(t), limit \(limit)")
        }
        let meanSquare = z.reduce(0) { $0 + $1 * $1 } / n
        #expect(meanSquare >= 0.7 && meanSquare <= 1.35, "\(label): mean Z² = \(meanSquare)")
        let mean = z.reduce(0, +) / n
        print("calibration \(label): \(z.count) keys in \(String(format: "%.1f", seconds)) s; mean Z \(String(format: "%.3f", mean)), "
              + "mean Z² \(String(format: "%.3f", meanSquare)), min \(String(format: "%.2f", z.min()!)), max \(String(format: "%.2f", z.max()!)), "
              + "#Z≥3 \(z.filter { $0 >= 3 }.count)")
    }

    @Test("the binomial quantile helper matches known values")
    func binomialQuantile() {
        // Binomial(10, 0.5): P(X > 9) = 1/1024 ≈ 9.8e-4, P(X > 8) = 11/1024 ≈ 1.07e-2.
        #expect(Self.binomialUpperQuantile(n: 10, p: 0.5, tail: 1e-3) == 9)
        #expect(Self.binomialUpperQuantile(n: 10, p: 0.5, tail: 1e-2) == 9)
        #expect(Self.binomialUpperQuantile(n: 10, p: 0.5, tail: 1.1e-2) == 8)
        // Binomial(2000, 0.011109) (z = 3): mean 22.2; the 1 − 2.8e-8 quantile is far above, below 2× the mean + 30.
        let q = Self.binomialUpperQuantile(n: 2000, p: exp(-4.5), tail: 2.8e-8)
        #expect(q > 40 && q < 75, "\(q)")
    }
}

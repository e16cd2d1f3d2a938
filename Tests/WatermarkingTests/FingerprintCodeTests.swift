import Foundation
import Testing
@testable import Watermarking

@Suite("Fingerprint code and trace bound")
struct FingerprintCodeTests {
    static let secret: [UInt8] = (0..<32).map { UInt8(($0 * 29 + 3) & 0xFF) }

    @Test("biases follow the arcsine law within [2/256, 254/256]; bits are deterministic and as frequent as p")
    func code() {
        let code = FingerprintCode(secret: Self.secret)
        #expect(code.thresholds.count == FingerprintCode.positions)
        #expect(code.thresholds.allSatisfy { (2...254).contains($0) })
        // Arcsine on [t, 1 − t] (θ uniform on [θ_t, π/2 − θ_t], p = sin²θ): E[p(1 − p)] = E[sin²2θ]/4
        // = 1/8 + sin(4θ_t)/(16(π/2 − 2θ_t)) ≈ 0.1405. Over 8,192 draws the mean's sd is ≈ 0.001: ±0.005 is 5σ
        // (the rounding to k/256 moves it by < 1e-4).
        let thetaT = asin((2.0 / 256).squareRoot())
        let expected = 0.125 + sin(4 * thetaT) / (16 * (Double.pi / 2 - 2 * thetaT))
        let pq = code.biases.reduce(0) { $0 + $1 * (1 - $1) } / Double(code.thresholds.count)
        #expect(abs(pq - expected) < 0.005, "mean p(1−p) \(pq), expected \(expected)")
        // Median 1/2 by symmetry: the share of p < 1/2 is within 5σ (σ = 0.0055) of 1/2.
        let below = Double(code.biases.filter { $0 < 0.5 }.count) / Double(code.thresholds.count)
        #expect(abs(below - 0.5) < 0.03)
        #expect(code.bits(recipient: "alice") == code.bits(recipient: "alice"))
        #expect(code.bits(recipient: "alice") != code.bits(recipient: "alice "))
        // Σ_i (X_i − p_i) over 200 recipients × 8,192 positions: sd = sqrt(200 · Σ p(1−p)) ≈ 453; 6σ ≈ 2,700.
        var excess = 0.0
        let p = code.biases
        for j in 0..<200 {
            let bits = code.bits(recipient: "r\(j)")
            for i in 0..<bits.count { excess += Double(bits[i]) - p[i] }
        }
        #expect(abs(excess) < 2_700, "Σ(X − p) = \(excess)")
    }

    @Test("the Chernoff bound is at least the exact tail of an innocent's score (12 positions, enumerated)")
    func boundAboveExactTail() {
        let code = FingerprintCode(secret: Self.secret)
        let m = FingerprintCode.positions
        // Soft values on 12 positions only (the rest read as erased): the innocent's score takes 2^12 values.
        var y = [Double](repeating: 0, count: m)
        let used = (0..<12).map { $0 * 677 % m }
        for (k, i) in used.enumerated() { y[i] = k % 3 == 0 ? -0.7 : Double(k + 1) / 6 }
        let scorer = TraceScorer(code: code, reading: FingerprintReading(values: y, weights: [Int](repeating: 1, count: m)))
        let p = code.biases
        var distribution: [(score: Double, probability: Double)] = []
        for mask in 0..<(1 << used.count) {
            var s = 0.0, prob = 1.0
            for (k, i) in used.enumerated() {
                let x = (mask >> k) & 1 == 1
                s += y[i] * (x ? ((1 - p[i]) / p[i]).squareRoot() : -(p[i] / (1 - p[i])).squareRoot())
                prob *= x ? p[i] : 1 - p[i]
            }
            distribution.append((s, prob))
        }
        let maximum = distribution.map(\.score).max()!
        for fraction in stride(from: 0.05, through: 1.0, by: 0.05) {
            let s = fraction * maximum
            let tail = distribution.filter { $0.score >= s - 1e-12 }.reduce(0) { $0 + $1.probability }
            let bound = exp(scorer.logBound(score: s))
            #expect(bound >= tail * (1 - 1e-9), "s = \(s): bound \(bound) < exact tail \(tail)")
        }
    }

    @Test("screening scores agree with exact scores within the stated margin")
    func screening() {
        let code = FingerprintCode(secret: Self.secret)
        let m = FingerprintCode.positions
        var y = [Double](repeating: 0, count: m)
        var state: UInt64 = 7
        for i in 0..<m { state = state &* 6364136223846793005 &+ 1442695040888963407; y[i] = Double(Int64(bitPattern: state >> 11) % 2001 - 1000) / 1000 }
        let scorer = TraceScorer(code: code, reading: FingerprintReading(values: y, weights: [Int](repeating: 1, count: m)))
        let ids = (0..<50).map { "id-\($0)" }
        let screened = scorer.screeningScores(ids)
        for (k, id) in ids.enumerated() {
            #expect(abs(Double(screened[k]) - scorer.score(id)) <= scorer.screeningMargin)
        }
    }

    @Test("the embedder's fingerprint kernel adds exactly β_f·chip·(2X − 1) at the documented positions",
          arguments: [(1, 0), (100, 7), (2048, 3), (2048 + 17, 1 << 32 - 5), (5632, 1000)])
    func kernelMatchesDefinition(_ n: Int, _ firstRow: Int) {
        let code = FingerprintCode(secret: Self.secret)
        let fingerprint = RecipientFingerprint(code: code, recipient: "alice@example.org", share: 0.4)
        let bits = code.bits(recipient: "alice@example.org")
        let rows = 21 // not a multiple of the kernel's 16 rows at a time
        let scale: Float = 0.0123
        var out = (0..<(rows * n)).map { Float($0 % 13) * 0.25 - 1.5 }
        let before = out
        out.withUnsafeMutableBufferPointer { fingerprint.add(rows: firstRow..<(firstRow + rows), cols: n, scale: scale, into: $0.baseAddress!) }
        // docs/FORMAT.md, "Carrier": position of (r, c/64) and chip of (r, c) from the row's keystreams.
        var positions: [UInt32] = [], chips: [UInt32] = []
        var mismatches = 0
        for r in 0..<rows {
            code.rowCodes(row: firstRow + r, cols: n, positions: &positions, chips: &chips)
            for c in 0..<n {
                let chip: Float = (chips[c / 32] >> UInt32(c % 32)) & 1 == 1 ? 1 : -1
                let sign: Float = bits[Int(positions[c / 64])] == 1 ? 1 : -1
                if out[r * n + c] != before[r * n + c] + scale * sign * chip { mismatches += 1 }
            }
        }
        #expect(mismatches == 0, "n = \(n), rows from \(firstRow)")
    }
}

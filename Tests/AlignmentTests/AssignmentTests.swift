import Alignment
import LinearAlgebra
import Testing

@Suite("Linear assignment (Jonker–Volgenant shortest augmenting paths)")
struct AssignmentTests {
    /// Best total by enumerating every injective map of the smaller side.
    static func bruteForce(_ s: [Float], rows r: Int, cols c: Int) -> Double {
        var best = -Double.infinity
        func go(_ i: Int, _ used: inout [Bool], _ total: Double, _ transposed: Bool) {
            let (n, m) = transposed ? (c, r) : (r, c)
            if i == n { best = max(best, total); return }
            for j in 0..<m where !used[j] {
                used[j] = true
                go(i + 1, &used, total + Double(transposed ? s[j * c + i] : s[i * c + j]), transposed)
                used[j] = false
            }
        }
        var used = [Bool](repeating: false, count: max(r, c))
        go(0, &used, 0, r > c)
        return best
    }

    @Test("optimal on random square and rectangular matrices, each column used at most once", arguments: [(5, 5), (6, 6), (4, 7), (7, 4), (1, 3), (3, 1)])
    func optimal(shape: (Int, Int)) {
        let (r, c) = shape
        var rng = SplitMix64(seed: UInt64(r * 31 + c))
        for trial in 0..<60 {
            // Integer-valued ties (trial % 3 == 0) exercise the augmenting paths; Gaussians the general case.
            let s: [Float] = (0..<(r * c)).map { _ in trial % 3 == 0 ? Float(Int(rng.next() % 4)) : rng.nextGaussian() }
            let match = LinearAssignment.maximize(s, rows: r, cols: c)
            #expect(match.count == r)
            let cols = match.compactMap { $0 }
            #expect(cols.count == min(r, c), "\(r)×\(c) trial \(trial): \(cols.count) rows assigned")
            #expect(Set(cols).count == cols.count, "\(r)×\(c) trial \(trial): a column used twice")
            var total = 0.0
            for (i, j) in match.enumerated() { if let j { total += Double(s[i * c + j]) } }
            let best = Self.bruteForce(s, rows: r, cols: c)
            #expect(abs(total - best) <= 1e-4 * max(1, abs(best)), "\(r)×\(c) trial \(trial): total \(total), optimum \(best)")
        }
    }

    @Test("a noisy permutation of 1,500 units is recovered exactly")
    func largePermutation() {
        let n = 1500
        var rng = SplitMix64(seed: 7)
        var p = Array(0..<n)
        p.shuffle(using: &rng)
        // Similarity near 1 on the hidden permutation, noise elsewhere (including a few strong decoys).
        var s = [Float](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0..<n { s[i * n + j] = 0.2 * rng.nextGaussian() } }
        for i in 0..<n { s[i * n + p[i]] = 1 + 0.05 * rng.nextGaussian() }
        let match = LinearAssignment.maximize(s, rows: n, cols: n)
        #expect(match.map { $0! } == p)
    }
}

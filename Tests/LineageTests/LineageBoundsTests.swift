import Foundation
import Testing
@testable import Lineage
import LinearAlgebra

@Suite("Lineage bounds")
struct LineageBoundsTests {
    @Test("longest increasing subsequence")
    func lis() {
        #expect(LineageBounds.longestIncreasing([]) == 0)
        #expect(LineageBounds.longestIncreasing([3, 1, 2, 5, 4]) == 3)
        #expect(LineageBounds.longestIncreasing([1, 1, 1]) == 1)
        #expect(LineageBounds.longestIncreasing(Array(0..<100)) == 100)
    }
}

@Suite("Lineage bounds hold on random arrangements")
struct LineageBoundsMonteCarloTests {
    /// Under the null the statistic is computed on a uniformly random arrangement; the p-values must be super-uniform:
    /// the share at or below u is at most u (plus Monte-Carlo slack) for every u tried.
    @Test("increasing-run p-values are super-uniform", arguments: [(40, 40), (64, 10), (200, 1000)])
    func increasing(_ m: Int, _ values: Int) {
        var rng = SplitMix64(seed: 20261204)
        let draws = 4_000
        var ps: [Double] = []
        for _ in 0..<draws {
            // A fixed multiset (with repeats when values < m), in a random order.
            let multiset = (0..<m).map { $0 % values }
            ps.append(exp(LineageBounds.logPIncreasing(lis: LineageBounds.longestIncreasing(multiset.shuffled(using: &rng)), count: m)))
        }
        for u in [0.5, 0.1, 0.01] {
            let share = Double(ps.filter { $0 <= u }.count) / Double(draws)
            #expect(share <= u + 3 * (u / Double(draws)).squareRoot(), "m \(m): share \(share) at u \(u)")
        }
        // A perfectly ordered layer is far beyond anything the null gives.
        #expect(LineageBounds.logPIncreasing(lis: m, count: m) < log(1e-20) || values < m)
    }

    @Test("agreement p-values are super-uniform when the output side is rearranged")
    func agreement() {
        var rng = SplitMix64(seed: 20261204)
        let m = 60, n = 20, draws = 4_000
        var ps: [Double] = []
        // A fixed input side with repeats, an output side whose positions are shuffled (H0′).
        let input = (0..<m).map { ($0 * 7) % n }
        let outputValues = (0..<m).map { ($0 * 3) % n }
        for _ in 0..<draws {
            let output = outputValues.shuffled(using: &rng)
            var counts: [Int: Int] = [:]
            for v in output { counts[v, default: 0] += 1 }
            let agree = zip(input, output).filter { $0 == $1 }.count
            let mu = Double(input.reduce(0) { $0 + (counts[$1] ?? 0) }) / Double(m)
            ps.append(exp(LineageBounds.logPAgreement(agree: agree, count: m, meanMultiplicity: mu)))
        }
        for u in [0.5, 0.1, 0.01] {
            let share = Double(ps.filter { $0 <= u }.count) / Double(draws)
            #expect(share <= u + 3 * (u / Double(draws)).squareRoot(), "share \(share) at u \(u)")
        }
    }

    @Test("Fisher's combination is exact for uniform p-values")
    func fisher() {
        var rng = SplitMix64(seed: 20261204)
        let draws = 20_000
        var below = 0
        for _ in 0..<draws {
            let logs = (0..<6).map { _ in log(Double.random(in: 1e-300...1, using: &rng)) }
            if LineageBounds.logFisher(logs) <= log(0.05) { below += 1 }
        }
        let share = Double(below) / Double(draws)
        #expect(abs(share - 0.05) < 0.006, "share \(share)")
        #expect(LineageBounds.logFisher([log(0.5)]) == log(0.5) || abs(LineageBounds.logFisher([log(0.5)]) - log(0.5)) < 1e-12)
    }
}

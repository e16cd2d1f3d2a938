import Foundation

/// The tail bounds behind the lineage p-values (docs/LINEAGE.md). Every value is a natural logarithm, because the
/// p-values of a copied layer reach 1e-1000 and below.
public enum LineageBounds {
    /// ln n!
    static func logFactorial(_ n: Int) -> Double { lgamma(Double(n) + 1) }

    /// ln C(n, k)
    static func logBinomial(_ n: Int, _ k: Int) -> Double {
        guard k >= 0, k <= n else { return -.infinity }
        return logFactorial(n) - logFactorial(k) - logFactorial(n - k)
    }

    /// A valid p-value from a family of tail bounds `P(T ≥ k) ≤ exp(b(k))`: `min(1, min_{j ≤ t} exp(b(j)))`.
    ///
    /// For any level u, the event "the minimum over j ≤ T is ≤ u" is the event T ≥ k_u, with k_u the first j whose
    /// bound is ≤ u, so its probability is at most exp(b(k_u)) ≤ u whatever shape b has.
    static func pValue(observed t: Int, logBound b: (Int) -> Double) -> Double {
        var best = 0.0
        if t >= 1 { for j in 1...t { best = min(best, b(j)) } }
        return best
    }

    /// ln p for a longest strictly increasing subsequence of length `lis` among `m` values drawn in a uniformly random
    /// order: at most C(m, k)/k! increasing k-subsequences are expected, so `P(LIS ≥ k) ≤ C(m, k)/k!`.
    public static func logPIncreasing(lis: Int, count m: Int) -> Double {
        pValue(observed: lis) { k in logBinomial(m, k) - logFactorial(k) }
    }

    /// ln p for `agree` positions where two maps give the same reference unit, when the second map's values are a
    /// uniformly random rearrangement (among the m positions) of their multiset: with `multiplicity[i]` the number of
    /// positions whose second-map value equals the first map's value at i, a fixed k-set agrees with probability at
    /// most ∏ multiplicity / (m)_k, and by Maclaurin's inequality the sum over k-sets of that product is at most
    /// C(m, k)·μᵏ with μ the mean multiplicity. So `P(A ≥ k) ≤ C(m, k)·μᵏ·(m − k)!/m!`.
    public static func logPAgreement(agree: Int, count m: Int, meanMultiplicity mu: Double) -> Double {
        guard mu > 0 else { return agree > 0 ? -.infinity : 0 }
        return pValue(observed: agree) { k in
            logBinomial(m, k) + Double(k) * log(mu) - (logFactorial(m) - logFactorial(m - k))
        }
    }

    /// ln of Fisher's combination of independent p-values given as logarithms: `P(χ²_{2L} ≥ −2 Σ ln p)`, which for an
    /// even number of degrees of freedom is `e^{−x} Σ_{j<L} x^j/j!` with x = −Σ ln p. Valid (conservative) when the
    /// p-values are independent and each is super-uniform (`P(p ≤ u) ≤ u`).
    public static func logFisher(_ logPs: [Double]) -> Double {
        let l = logPs.count
        guard l > 0 else { return 0 }
        let x = -logPs.reduce(0, +)
        guard x > 0 else { return 0 }
        if x.isInfinite { return -.infinity }
        // log Σ_{j<L} x^j/j! by log-sum-exp.
        let terms = (0..<l).map { j in Double(j) * log(x) - logFactorial(j) }
        let top = terms.max()!
        let sum = top + log(terms.reduce(0) { $0 + exp($1 - top) })
        return min(0, -x + sum)
    }

    /// Length of the longest strictly increasing subsequence (patience sorting, O(n log n)).
    public static func longestIncreasing(_ values: [Int]) -> Int {
        var tails: [Int] = []
        for v in values {
            var lo = 0, hi = tails.count
            while lo < hi { let mid = (lo + hi) / 2; if tails[mid] < v { lo = mid + 1 } else { hi = mid } }
            if lo == tails.count { tails.append(v) } else { tails[lo] = v }
        }
        return tails.count
    }

    /// log10 from ln, for reports.
    public static func log10(_ ln: Double) -> Double { ln / M_LN10 }
}

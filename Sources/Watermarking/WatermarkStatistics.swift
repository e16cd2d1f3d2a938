import Foundation

/// The statistics of detection.
///
/// Under H0 (unmarked model, another key, an independent model) the keyed signs S are independent of the
/// projections Y, so the combined score
///
///     Z = Σ_t w_t ⟨Y_t, S_t⟩/‖Y_t‖ / sqrt(Σ_t w_t²)
///
/// is a weighted Rademacher sum whose coefficient vector has unit norm, whatever the weights look like.
/// Hoeffding's inequality then gives the distribution-free bound `P(Z ≥ z) ≤ exp(−z²/2)` for z ≥ 0.
public enum WatermarkStatistics {
    /// log10 of Hoeffding's bound exp(−z²/2) (0 for z ≤ 0, where the bound is trivial).
    public static func log10HoeffdingBound(_ z: Double) -> Double {
        z <= 0 ? 0 : -z * z / (2 * M_LN10)
    }

    /// log10 of the Gaussian upper tail Φ̄(z), accurate far into the tail (asymptotic series beyond z = 30).
    public static func log10GaussianTail(_ z: Double) -> Double {
        if z < 30 { return Foundation.log10(0.5 * erfc(z / 2.0.squareRoot())) }
        // Φ̄(z) = φ(z)/z · (1 − 1/z² + 3/z⁴ − 15/z⁶ …)
        let z2 = z * z
        let series = 1 - 1 / z2 + 3 / (z2 * z2) - 15 / (z2 * z2 * z2)
        return (-z2 / 2 - Foundation.log(z * (2 * Double.pi).squareRoot()) + Foundation.log(series)) / M_LN10
    }

    /// Combined Z from per-tensor scores and fixed weights.
    public static func combinedZ(scores: [Double], weights: [Double]) -> Double {
        precondition(scores.count == weights.count)
        let norm = weights.reduce(0) { $0 + $1 * $1 }.squareRoot()
        guard norm > 0 else { return 0 }
        return zip(scores, weights).reduce(0) { $0 + $1.0 * $1.1 } / norm
    }
}

import Foundation

/// One key a verification tried, with its own (single-key) score.
public struct KeyTrial: Sendable, Codable, Equatable {
    public var label: String
    public var keyId: String
    public var releaseId: String?
    public var combinedZ: Double
    public init(label: String, keyId: String, releaseId: String?, combinedZ: Double) {
        self.label = label; self.keyId = keyId; self.releaseId = releaseId; self.combinedZ = combinedZ
    }
}

/// Which keys a verdict searched and which matched (docs/FORMAT.md, "Keys tried").
public struct KeySearchRecord: Sendable, Codable, Equatable {
    /// How many distinct keys were tried; the bound is multiplied by it (Bonferroni).
    public var keysTried: Int
    /// The key the verdict reports: the one with the smallest bound.
    public var matched: KeyTrial
    /// Every key tried, in the order tried.
    public var trials: [KeyTrial]
    public init(keysTried: Int, matched: KeyTrial, trials: [KeyTrial]) {
        self.keysTried = keysTried; self.matched = matched; self.trials = trials
    }
}

extension DetectionReport {
    /// The same report with its bound paid for `keysTried` keys searched: P(best of K ≥ z) ≤ K·formats·exp(−z²/2).
    public func payingForKeys(_ search: KeySearchRecord) -> DetectionReport {
        var r = self
        r.keySearch = search
        let family = Foundation.log10(Double(max(1, formatsTried ?? 1))) + Foundation.log10(Double(max(1, search.keysTried)))
        r.log10PValueBound = min(0, WatermarkStatistics.log10HoeffdingBound(combinedZ) + family)
        r.log10PValueGaussian = min(0, WatermarkStatistics.log10GaussianTail(combinedZ) + family)
        r.detected = !tensors.isEmpty && r.log10PValueBound <= Foundation.log10(alpha)
        if let coverage { r.applyCoverage(coverage) }
        return r
    }
}

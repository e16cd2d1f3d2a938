import Foundation

/// What `embed` writes next to its output: enough to audit the release and to re-run detection.
public struct EmbedManifest: Sendable, Codable {
    public struct TensorRecord: Sendable, Codable, Equatable {
        public var name: String
        public var shape: [Int]
        public var dtype: String
        /// Intended relative distortion ‖ΔW‖/‖W‖.
        public var delta: Double
        /// Measured after rounding to the stored dtype.
        public var measuredDelta: Double
        public var beta: Double
    }
    public var tool: String
    public var formatVersion: Int
    public var keyId: String
    public var created: String
    public var shaping: WatermarkShaping
    public var rank: Int
    public var delta: Double
    public var expectedBlindZ: Double
    public var deltaCapped: Bool
    public var selection: TensorSelection
    public var tensors: [TensorRecord]
    public var input: [FileDigest]
    public var output: [FileDigest]
}

/// Per-tensor detection evidence. Reports carry the raw correlation, norm and weight so that reports of
/// disjoint tensor sets combine exactly.
public struct TensorEvidence: Sendable, Codable, Equatable {
    public var name: String
    public var shape: [Int]
    /// Fixed weight sqrt(m·n).
    public var weight: Double
    /// ⟨Y, S⟩.
    public var correlation: Double
    /// ‖Y‖_F.
    public var norm: Double
    /// Elements masked as erasures (informed mode: zero in the suspect, non-zero in the reference).
    public var erased: Int
    /// z_t = ⟨Y, S⟩ / ‖Y‖_F.
    public var z: Double { norm > 0 ? correlation / norm : 0 }
}

/// A tensor the detector expected but could not use.
public struct SkippedTensor: Sendable, Codable, Equatable {
    public var name: String
    public var reason: String
}

/// The verdict of `detect`, machine-readable.
public struct DetectionReport: Sendable, Codable {
    public enum Mode: String, Sendable, Codable { case blind, informed }

    public var tool: String
    public var formatVersion: Int
    public var keyId: String
    public var suspect: String
    public var reference: String?
    public var mode: Mode
    public var alpha: Double
    public var tensors: [TensorEvidence]
    public var skipped: [SkippedTensor]
    public var combinedZ: Double
    /// log10 of the rigorous (Hoeffding) bound on the false-positive probability.
    public var log10PValueBound: Double
    /// log10 of the Gaussian estimate Φ̄(Z).
    public var log10PValueGaussian: Double
    public var detected: Bool

    /// Builds a report and its verdict from evidence.
    public init(keyId: String, suspect: String, reference: String?, mode: Mode, alpha: Double,
                tensors: [TensorEvidence], skipped: [SkippedTensor]) {
        tool = "weightmark \(WatermarkFormat.toolVersion)"
        formatVersion = WatermarkFormat.version
        self.keyId = keyId
        self.suspect = suspect
        self.reference = reference
        self.mode = mode
        self.alpha = alpha
        self.tensors = tensors
        self.skipped = skipped
        combinedZ = WatermarkStatistics.combinedZ(scores: tensors.map(\.z), weights: tensors.map(\.weight))
        log10PValueBound = WatermarkStatistics.log10HoeffdingBound(combinedZ)
        log10PValueGaussian = WatermarkStatistics.log10GaussianTail(combinedZ)
        detected = !tensors.isEmpty && log10PValueBound <= Foundation.log10(alpha)
    }

    /// Merges reports of disjoint tensor sets (same key, format and mode) into the verdict one run over
    /// all tensors would give.
    public static func combining(_ reports: [DetectionReport], alpha: Double? = nil) throws -> DetectionReport {
        guard let first = reports.first else { throw WatermarkError.incompatibleReports(reason: "no reports given") }
        var seen = Set<String>()
        var tensors: [TensorEvidence] = []
        var skipped: [SkippedTensor] = []
        for r in reports {
            guard r.keyId == first.keyId else {
                throw WatermarkError.incompatibleReports(reason: "key ids differ (\(first.keyId) vs \(r.keyId))")
            }
            guard r.formatVersion == first.formatVersion else {
                throw WatermarkError.incompatibleReports(reason: "format versions differ (\(first.formatVersion) vs \(r.formatVersion))")
            }
            guard r.mode == first.mode else {
                throw WatermarkError.incompatibleReports(reason: "one report is \(first.mode.rawValue), another \(r.mode.rawValue)")
            }
            for t in r.tensors {
                guard seen.insert(t.name).inserted else {
                    throw WatermarkError.incompatibleReports(reason: "tensor \"\(t.name)\" appears in two reports; their tensor sets must be disjoint")
                }
                tensors.append(t)
            }
            skipped += r.skipped
        }
        return DetectionReport(keyId: first.keyId, suspect: reports.map(\.suspect).joined(separator: " + "),
                               reference: first.reference, mode: first.mode, alpha: alpha ?? first.alpha,
                               tensors: tensors, skipped: skipped.filter { !seen.contains($0.name) })
    }
}

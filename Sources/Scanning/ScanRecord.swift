import Foundation

/// What became of one model.
public enum ScanStatus: String, Sendable, Codable, CaseIterable {
    /// Every key was tested (a hit or not).
    case ok
    /// Read, but nothing to test: no matrix that can carry a mark, a recognized format WeightMark does not read,
    /// or larger than `--max-bytes`. The reason says which. Never "clean".
    case skipped
    /// Could not be read (unreadable, truncated, malformed, changed during the scan). Never "clean".
    case error
    /// The per-model time limit ran out before every key was tested. Hits found before it still stand.
    case timeout
    /// Read, no hit, but more of its candidate matrices could not be decoded than a negative answer allows
    /// (`ReadCoverage`: more than 10%). The reason says what was not read. Never "clean".
    case inconclusive
}

/// One key found in one model.
public struct ScanHit: Sendable, Codable, Equatable {
    public var keyId: String
    /// Format of the mark tested ("v1" or "v2") and the stage that found it ("sample" or "full").
    public var format: String
    public var stage: String
    public var z: Double
    /// Hoeffding bound exp(−z²/2) for this one test, and after the family-wise (Bonferroni) correction.
    public var p: Double
    public var familywiseP: Double
    /// The command that checks the hit again on its own (`weightmark detect`).
    public var recheck: String
    public init(keyId: String, format: String, stage: String, z: Double, p: Double, familywiseP: Double, recheck: String) {
        self.keyId = keyId; self.format = format; self.stage = stage; self.z = z; self.p = p; self.familywiseP = familywiseP; self.recheck = recheck
    }
}

/// The score of one test that was not a hit (kept so the record shows what was looked at).
public struct ScanScore: Sendable, Codable, Equatable {
    public var keyId: String
    public var format: String
    public var stage: String
    public var z: Double
    public init(keyId: String, format: String, stage: String, z: Double) {
        self.keyId = keyId; self.format = format; self.stage = stage; self.z = z
    }
}

/// One JSON line of `scan` output: a model.
public struct ScanRecord: Sendable, Codable, Equatable {
    public var type = "model"
    /// Where it is; a member of an archive reads `archive.tar!member/path`.
    public var path: String
    /// The format as sniffed from the bytes ("safetensors", "GGUF", …), nil when unknown.
    public var format: String?
    /// Bytes of the model on disk, and how many of them the scan read (headers plus the tensors it decoded).
    public var bytes: Int
    public var bytesRead: Int
    public var status: ScanStatus
    /// Why the status is not ok (or what limited it).
    public var reason: String?
    public var hits: [ScanHit]
    /// Every test run, hit or not: key, format, stage and Z.
    public var scores: [ScanScore]
    /// Tests paid for per key in this model (stages × formats) — the factor of the Bonferroni correction.
    public var testsPerKey: Int
    /// Matrices tested in the sample stage, of the candidates (2-D floating, ≥ 65,536 elements).
    public var sampledMatrices: Int?
    public var candidateMatrices: Int?
    public var ms: Int
    public var shard: String

    public init(path: String, format: String?, bytes: Int, bytesRead: Int, status: ScanStatus, reason: String?,
                hits: [ScanHit], scores: [ScanScore], testsPerKey: Int, sampledMatrices: Int?, candidateMatrices: Int?,
                ms: Int, shard: String) {
        self.path = path; self.format = format; self.bytes = bytes; self.bytesRead = bytesRead; self.status = status
        self.reason = reason; self.hits = hits; self.scores = scores; self.testsPerKey = testsPerKey
        self.sampledMatrices = sampledMatrices; self.candidateMatrices = candidateMatrices; self.ms = ms; self.shard = shard
    }
}

/// The family-wise threshold a sweep applies, stated in every trailer.
public struct ScanThreshold: Sendable, Codable, Equatable {
    /// Family-wise false-positive probability.
    public var alpha: Double
    /// Models the threshold is paid for: `--family-models`, or more if more were tested.
    public var models: Int
    public var keys: Int
    /// Largest number of tests per model and key (stages × formats).
    public var testsPerKey: Int
    /// "Bonferroni": a hit needs p · models · keys · testsPerKey(model) ≤ alpha.
    public var method: String
    /// Z a single test must reach in a model with the largest tests per key.
    public var zThreshold: Double
    public init(alpha: Double, models: Int, keys: Int, testsPerKey: Int) {
        self.alpha = alpha; self.models = models; self.keys = keys; self.testsPerKey = testsPerKey
        method = "Bonferroni over models × keys × stages × formats; per-test bound P(Z ≥ z) ≤ exp(−z²/2) (Hoeffding)"
        zThreshold = FamilyWise.zThreshold(alpha: alpha, tests: Double(models) * Double(keys) * Double(testsPerKey))
    }
}

/// The last line of a shard's output: how many records precede it and their digest, so `combine` can tell a
/// complete shard from a truncated, duplicated or missing one.
public struct ScanTrailer: Sendable, Codable, Equatable {
    public var type = "trailer"
    public var shard: String
    /// Model records before this line, and SHA-256 (hex) of their exact bytes, newlines included.
    public var records: Int
    public var sha256: String
    /// Models tested (status ok or timeout) in this shard.
    public var modelsTested: Int
    public var keyIds: [String]
    public var threshold: ScanThreshold
    /// Files looked at that hold no model (counted, not listed), and problems of the walk itself (unlistable
    /// folders, symbolic-link loops, missing inputs), each also reported as a record.
    public var nonModelFiles: Int
    public var walkProblems: Int
    public var tool: String
    public init(shard: String, records: Int, sha256: String, modelsTested: Int, keyIds: [String], threshold: ScanThreshold,
                nonModelFiles: Int, walkProblems: Int, tool: String) {
        self.shard = shard; self.records = records; self.sha256 = sha256; self.modelsTested = modelsTested
        self.keyIds = keyIds; self.threshold = threshold; self.nonModelFiles = nonModelFiles; self.walkProblems = walkProblems
        self.tool = tool
    }
}

/// Bonferroni arithmetic of the family-wise threshold, in log space (p-values of marked models underflow).
public enum FamilyWise {
    /// Smallest z with exp(−z²/2) · tests ≤ alpha.
    public static func zThreshold(alpha: Double, tests: Double) -> Double {
        (2 * (log(max(tests, 1)) - log(alpha))).squareRoot()
    }
    /// log10 of the bound exp(−z²/2) (0 for z ≤ 0).
    public static func log10P(z: Double) -> Double { z <= 0 ? 0 : -z * z / (2 * M_LN10) }
    /// p·tests, capped at 1.
    public static func familywiseP(z: Double, tests: Double) -> Double {
        min(1, pow(10, log10P(z: z) + log10(max(tests, 1))))
    }
}

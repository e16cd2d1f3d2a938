import Crypto
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
        /// NaN/±Inf values found in the tensor and left as they were (absent when there were none).
        public var nonFiniteValues: Int?

        public init(name: String, shape: [Int], dtype: String, delta: Double, measuredDelta: Double, beta: Double,
                    nonFiniteValues: Int? = nil) {
            self.name = name; self.shape = shape; self.dtype = dtype; self.delta = delta
            self.measuredDelta = measuredDelta; self.beta = beta; self.nonFiniteValues = nonFiniteValues
        }
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
    /// Weight files of the input folder left out of the output (`embed --drop-unmarked-weights`).
    public var droppedFiles: [String]?
    /// The recipient of this personal copy and the fingerprint's parameters (`embed --recipient`).
    public var fingerprint: FingerprintRecord?
    /// The release this model was marked for (absent for models marked with the owner key itself).
    public var release: ReleaseRecord? = nil
}

/// The public half of a release commitment, recorded in the manifest (docs/FORMAT.md, "Releases").
public struct ReleaseRecord: Sendable, Codable, Equatable {
    /// Release id: the subkey is HKDF(owner key, id).
    public var id: String
    /// Key id of the release subkey (the key the model is marked with).
    public var keyId: String
    /// Key id of the owner key the subkey derives from.
    public var ownerKeyId: String
    /// Hex SHA-256 commitment to the subkey, a nonce, the original's tensors and the parameters.
    public var commitment: String
    public init(id: String, keyId: String, ownerKeyId: String, commitment: String) {
        self.id = id; self.keyId = keyId; self.ownerKeyId = ownerKeyId; self.commitment = commitment
    }
}

/// Whether the key a detection used was fixed before the dispute.
public struct KeyCommitmentStatus: Sendable, Codable, Equatable {
    /// True when an opening was checked against the commitment of a manifest (or an evidence bundle).
    public var committed: Bool
    public var releaseId: String?
    public var commitment: String?
    /// What was checked, or the caution when nothing was.
    public var note: String
    public init(committed: Bool, releaseId: String? = nil, commitment: String? = nil, note: String) {
        self.committed = committed; self.releaseId = releaseId; self.commitment = commitment; self.note = note
    }
}

/// Per-tensor detection evidence. Reports carry the raw correlation, norm and weight so that reports of
/// disjoint tensor sets combine exactly.
public struct TensorScore: Sendable, Codable, Equatable {
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
    /// Format v2: how the matrix was read back onto the marked tile grid (e.g. "transposed").
    public var hypothesis: String?
    /// Format v2, informed: the reference matrix it was compared with.
    public var pairedWith: String?
    /// z_t = ⟨Y, S⟩ / ‖Y‖_F (format v2: Σ w⟨Ŷ, S⟩ / sqrt(Σ w²) over the tensor's scored tiles, for display; the
    /// combined Z pools tiles by position).
    public var z: Double { norm > 0 ? correlation / norm : 0 }

    public init(name: String, shape: [Int], weight: Double, correlation: Double, norm: Double, erased: Int,
                hypothesis: String? = nil, pairedWith: String? = nil) {
        self.name = name; self.shape = shape; self.weight = weight; self.correlation = correlation; self.norm = norm
        self.erased = erased; self.hypothesis = hypothesis; self.pairedWith = pairedWith
    }
}

/// A tensor the detector expected but could not use.
public struct SkippedTensor: Sendable, Codable, Equatable {
    public var name: String
    public var reason: String
}

/// Format v2's bookkeeping: how many tile positions chose the hypotheses (pilots) and how many were scored.
public struct TileStatistics: Sendable, Codable, Equatable {
    /// Tile positions (1 in 8) used only to choose each group's re-packaging hypothesis.
    public var pilotPositions: Int
    /// Tile positions whose pooled projections make up Z.
    public var scoredPositions: Int
    /// Re-packaging hypotheses tried per group of same-shaped matrices (chosen on the pilots, so they cost nothing
    /// in the bound).
    public var hypothesesPerGroup: Int
    public init(pilotPositions: Int, scoredPositions: Int, hypothesesPerGroup: Int) {
        self.pilotPositions = pilotPositions; self.scoredPositions = scoredPositions; self.hypothesesPerGroup = hypothesesPerGroup
    }
}

/// A tensor the selection picks in the suspect: what a complete set of reports must cover.
public struct SelectedTensor: Sendable, Codable, Hashable {
    public var name: String
    public var shape: [Int]
    public init(name: String, shape: [Int]) { self.name = name; self.shape = shape }
}

/// One of N disjoint parts of a model's selection, checked by separate `detect --part i/N` runs: tensor k of the
/// selection sorted by name belongs to part k mod N.
public struct ReportPart: Sendable, Codable, Equatable, CustomStringConvertible {
    public var index: Int
    public var count: Int
    public init(index: Int, count: Int) {
        precondition(count > 0 && index >= 0 && index < count, "part index must be in 0..<count")
        self.index = index; self.count = count
    }
    /// Parses "i/N" (0 ≤ i < N).
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n > 0, n <= 1_000_000, i >= 0, i < n else { return nil }
        self.init(index: i, count: n)
    }
    public var description: String { "\(index)/\(count)" }
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
    public var tensors: [TensorScore]
    public var skipped: [SkippedTensor]
    public var combinedZ: Double
    /// log10 of the rigorous (Hoeffding) bound on the false-positive probability.
    public var log10PValueBound: Double
    /// log10 of the Gaussian estimate Φ̄(Z).
    public var log10PValueGaussian: Double
    public var detected: Bool
    /// Carrier rank used (nil in reports written before version 1.1 of the report).
    public var rank: Int?
    /// The selection rule used.
    public var selection: TensorSelection?
    /// Every tensor the rule selects in the whole suspect model, also when this report covers only a part of
    /// them: `combine` checks that its inputs cover all of these, so reports cannot be cherry-picked.
    public var selectedTensors: [SelectedTensor]?
    /// Which part of `selectedTensors` this report covers (nil: all of them).
    public var part: ReportPart?
    /// How many formats were tried (auto: 2, v1 and v2); the bound is multiplied by it (Bonferroni).
    public var formatsTried: Int?
    /// Format v2: the statistic's bookkeeping.
    public var tileStatistics: TileStatistics?
    /// True when the evidence covers only part of the selection and the caller accepted that
    /// (`combine --allow-partial`): the bound then holds for the tensors shown, which may have been chosen after
    /// seeing their scores.
    public var partialCoverage: Bool?
    /// Whether the key was committed before the dispute (set by the CLI; nil in library reports).
    public var keyCommitment: KeyCommitmentStatus?
    /// The keys this verdict searched (the owner key, its releases) and which one matched; the bound above already
    /// pays for all of them (nil: one key, as in reports written before tool 0.4).
    public var keySearch: KeySearchRecord?
    /// How much of the suspect's candidate weights could be decoded (nil in reports written before tool 0.4).
    public var coverage: ReadCoverage?
    /// True when the verdict is negative but too much was left unread to say "not detected" (`ReadCoverage`).
    public var inconclusive: Bool?
    /// `SuspectFingerprint` of the files the report was computed from: `combine` refuses reports of different suspects.
    public var suspectFingerprint: String?
    /// SHA-256 of this report's canonical JSON (sorted keys, this field absent): `combine` refuses a report edited
    /// after it was written. Anyone can recompute it, so it catches mistakes, not forgers (evidence bundles do that).
    public var reportSHA256: String?
    /// Set by `combine`: how many reports this verdict merged; they are unverified inputs.
    public var combinedFromReports: Int?

    /// SHA-256 (hex) of the canonical encoding: sorted keys, `reportSHA256` absent.
    public func canonicalSHA256() -> String {
        var copy = self
        copy.reportSHA256 = nil
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let data = (try? e.encode(copy)) ?? Data()
        return SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// The report with `reportSHA256` set.
    public func sealed() -> DetectionReport {
        var copy = self
        copy.reportSHA256 = canonicalSHA256()
        return copy
    }

    /// Builds a report and its verdict from evidence.
    public init(keyId: String, suspect: String, reference: String?, mode: Mode, alpha: Double,
                tensors: [TensorScore], skipped: [SkippedTensor], rank: Int? = nil, selection: TensorSelection? = nil,
                selectedTensors: [SelectedTensor]? = nil, part: ReportPart? = nil, partialCoverage: Bool? = nil,
                format: MarkVersion = .v1, pooledZ: Double? = nil, formatsTried: Int = 1, tileStatistics: TileStatistics? = nil) {
        tool = "weightmark \(WeightMarkVersion.toolVersion)"
        formatVersion = format.rawValue
        self.formatsTried = formatsTried
        self.tileStatistics = tileStatistics
        self.keyId = keyId
        self.suspect = suspect
        self.reference = reference
        self.mode = mode
        self.alpha = alpha
        self.tensors = tensors
        self.skipped = skipped
        self.rank = rank
        self.selection = selection
        self.selectedTensors = selectedTensors
        self.part = part
        self.partialCoverage = partialCoverage
        combinedZ = pooledZ ?? WatermarkStatistics.combinedZ(scores: tensors.map(\.z), weights: tensors.map(\.weight))
        // Bonferroni over the formats tried: P(max of K scores ≥ z) ≤ K·exp(−z²/2).
        let family = Foundation.log10(Double(max(1, formatsTried)))
        log10PValueBound = min(0, WatermarkStatistics.log10HoeffdingBound(combinedZ) + family)
        log10PValueGaussian = min(0, WatermarkStatistics.log10GaussianTail(combinedZ) + family)
        detected = !tensors.isEmpty && log10PValueBound <= Foundation.log10(alpha)
    }

    /// Merges reports of disjoint tensor sets (same key, format, mode, rank and selection) into the verdict one
    /// run over all tensors would give.
    ///
    /// Nothing a report claims about itself is trusted where it can be recomputed: each tensor's weight must equal
    /// sqrt(m·n) of its shape, every tensor must belong to the declared selection, and the reports together must
    /// cover every selected tensor (as evidence or as skipped with a reason). Otherwise — e.g. someone kept only the
    /// reports whose tensors scored high — the merge is refused, unless `allowPartial`, which the verdict then states.
    /// - Throws: `WatermarkError.incompatibleReports` naming what does not match.
    public static func combining(_ reports: [DetectionReport], alpha: Double? = nil, allowPartial: Bool = false) throws -> DetectionReport {
        guard let first = reports.first else { throw WatermarkError.incompatibleReports(reason: "no reports given") }
        var seen = Set<String>()
        var partsSeen = Set<Int>()
        var tensors: [TensorScore] = []
        var skipped: [SkippedTensor] = []
        var problems: [String] = []
        let declared = first.selectedTensors.map(Set.init)
        for (k, r) in reports.enumerated() {
            let which = "report \(k + 1) (\(r.suspect))"
            if let recorded = r.reportSHA256, recorded != r.canonicalSHA256() {
                throw WatermarkError.incompatibleReports(reason: "\(which) was edited after detect wrote it (its content no longer hashes to its reportSHA256)")
            }
            guard r.suspectFingerprint == first.suspectFingerprint else {
                throw WatermarkError.incompatibleReports(reason: "\(which) was computed from other files than report 1 (suspect fingerprints \(r.suspectFingerprint?.prefix(16) ?? "none") and \(first.suspectFingerprint?.prefix(16) ?? "none")): combine merges parts of one suspect only")
            }
            guard r.formatVersion == MarkVersion.v1.rawValue, (r.formatsTried ?? 1) == 1 else {
                throw WatermarkError.incompatibleReports(reason: "\(which) is not a format-v1 report of one format (detect --format v1 --part i/N writes those); format v2 pools matrices by tile position, so its reports cannot be merged exactly: run detect on the whole model")
            }
            guard r.keyId == first.keyId else {
                throw WatermarkError.incompatibleReports(reason: "key ids differ (\(first.keyId) vs \(r.keyId) in \(which))")
            }
            guard r.formatVersion == first.formatVersion else {
                throw WatermarkError.incompatibleReports(reason: "format versions differ (\(first.formatVersion) vs \(r.formatVersion) in \(which))")
            }
            guard r.mode == first.mode else {
                throw WatermarkError.incompatibleReports(reason: "one report is \(first.mode.rawValue), \(which) is \(r.mode.rawValue)")
            }
            guard r.rank == first.rank else {
                throw WatermarkError.incompatibleReports(reason: "carrier ranks differ (\(first.rank.map(String.init) ?? "unrecorded") vs \(r.rank.map(String.init) ?? "unrecorded") in \(which))")
            }
            guard r.selection == first.selection else {
                throw WatermarkError.incompatibleReports(reason: "\(which) used another tensor selection (--include/--exclude) than report 1")
            }
            if r.selectedTensors.map(Set.init) != declared {
                problems.append("\(which) declares another set of selected tensors than report 1 (reports of separate files rather than `detect --part i/N` runs over one model)")
            }
            if let part = r.part {
                guard part.count >= 1, part.count <= 1 << 20, (0..<part.count).contains(part.index) else {
                    throw WatermarkError.incompatibleReports(reason: "\(which) claims part \(part.index) of \(part.count), which does not exist (parts are 0…N−1 of N ≥ 1)")
                }
                guard part.count == (first.part?.count ?? part.count) else {
                    throw WatermarkError.incompatibleReports(reason: "\(which) is part \(part) but report 1 is part \(first.part.map { "\($0)" } ?? "(none)"): parts of different splits")
                }
                guard partsSeen.insert(part.index).inserted else {
                    throw WatermarkError.incompatibleReports(reason: "part \(part.index) of \(part.count) appears twice (\(which)): combine takes reports of disjoint parts")
                }
            }
            for t in r.tensors {
                guard t.shape.count == 2, t.shape[0] > 0, t.shape[1] > 0,
                      case let (mn, overflow) = t.shape[0].multipliedReportingOverflow(by: t.shape[1]), !overflow else {
                    throw WatermarkError.incompatibleReports(reason: "tensor \"\(t.name)\" in \(which) has shape \(t.shape), not a matrix")
                }
                let weight = Double(mn).squareRoot()
                guard abs(t.weight - weight) <= 1e-9 * weight else {
                    throw WatermarkError.incompatibleReports(reason: "tensor \"\(t.name)\" in \(which) claims weight \(t.weight), but its shape \(t.shape) gives sqrt(m·n) = \(weight); weights are fixed by shapes")
                }
                // A norm is ‖Y‖ of a real matrix: positive and far from the float limits; anything else (1e308, 1e-300,
                // zero) is not a detector's output and would overflow the combined score.
                guard t.correlation.isFinite, t.norm.isFinite, t.norm > 1e-30, t.norm < 1e30, abs(t.correlation) < 1e30,
                      (t.correlation / t.norm).isFinite else {
                    throw WatermarkError.incompatibleReports(reason: "tensor \"\(t.name)\" in \(which) has a non-finite, zero or out-of-range correlation or norm (\(t.correlation), \(t.norm)): not a detector's output")
                }
                if let declared, !declared.contains(SelectedTensor(name: t.name, shape: t.shape)) {
                    problems.append("tensor \"\(t.name)\" \(t.shape) in \(which) is not in the declared selection")
                }
                guard seen.insert(t.name).inserted else {
                    throw WatermarkError.incompatibleReports(reason: "tensor \"\(t.name)\" appears in two reports; their tensor sets must be disjoint")
                }
                tensors.append(t.withWeight(weight))
            }
            skipped += r.skipped
        }
        skipped = skipped.filter { !seen.contains($0.name) }
        if let declared {
            let accounted = seen.union(skipped.map(\.name))
            let missing = declared.map(\.name).filter { !accounted.contains($0) }.sorted()
            if !missing.isEmpty {
                let list = missing.prefix(5).map { "\"\($0)\"" }.joined(separator: ", ") + (missing.count > 5 ? ", …" : "")
                problems.append("the reports cover \(declared.count - missing.count) of the \(declared.count) selected tensors; missing \(missing.count): \(list)")
            }
        } else {
            problems.append("the reports do not list the selected tensors (written by an older version), so their coverage cannot be checked")
        }
        if !problems.isEmpty && !allowPartial {
            throw WatermarkError.incompatibleReports(reason: problems.joined(separator: "; ") + ". Combine the reports of every part (detect --part i/N on the whole model), or pass --allow-partial to accept a verdict on a possibly cherry-picked subset")
        }
        return DetectionReport(keyId: first.keyId, suspect: reports.map(\.suspect).joined(separator: " + "),
                               reference: first.reference, mode: first.mode, alpha: alpha ?? first.alpha,
                               tensors: tensors, skipped: skipped, rank: first.rank, selection: first.selection,
                               selectedTensors: first.selectedTensors, part: nil,
                               partialCoverage: problems.isEmpty ? nil : true)
            .withCombination(of: reports.count, fingerprint: first.suspectFingerprint)
    }

    func withCombination(of count: Int, fingerprint: String?) -> DetectionReport {
        var copy = self
        copy.combinedFromReports = count
        copy.suspectFingerprint = fingerprint
        return copy
    }
}

extension TensorScore {
    func withWeight(_ w: Double) -> TensorScore { var t = self; t.weight = w; return t }
}

/// A cheap fingerprint of a suspect's files: SHA-256 over each regular file's relative name, size, and its first and
/// last MiB (a file, or every file of a folder, sorted). Different models give different fingerprints in practice; it
/// is not a full content hash (evidence bundles hash every byte).
public enum SuspectFingerprint {
    public static func of(path: String) -> String? {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { return nil }
        var files: [(String, String)] = []
        if isDir.boolValue {
            guard let walk = fm.enumerator(atPath: path) else { return nil }
            while let rel = walk.nextObject() as? String {
                let full = path + "/" + rel
                var d: ObjCBool = false
                if fm.fileExists(atPath: full, isDirectory: &d), !d.boolValue { files.append((rel, full)) }
            }
        } else {
            files = [((path as NSString).lastPathComponent, path)]
        }
        var hasher = SHA256()
        for (rel, full) in files.sorted(by: { $0.0 < $1.0 }) {
            guard let h = FileHandle(forReadingAtPath: full) else { continue }
            defer { try? h.close() }
            let size = (try? h.seekToEnd()) ?? 0
            hasher.update(data: Data((rel + "\u{0}" + String(size) + "\u{0}").utf8))
            let window: UInt64 = 1 << 20
            try? h.seek(toOffset: 0)
            if let head = try? h.read(upToCount: Int(min(window, size))) { hasher.update(data: head) }
            if size > window {
                try? h.seek(toOffset: size - window)
                if let tail = try? h.read(upToCount: Int(window)) { hasher.update(data: tail) }
            }
        }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

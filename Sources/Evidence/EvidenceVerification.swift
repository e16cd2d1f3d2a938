import Crypto
import Foundation
import TensorIO
import Watermarking

/// The outcome of `evidence --verify`: every check, the replayed detection and the timestamp.
public struct EvidenceVerification: Sendable {
    public var index: EvidenceBundleIndex
    public var checks: [EvidenceCheck]
    public var claimed: DetectionReport?
    public var replayed: DetectionReport?
    /// The lineage test re-run on the suspect and the reference, when the bundle claims one.
    public var lineageReplayed: LineageClaim?
    public var timestamp: TimeStampVerification?
    public var keyCommitted: Bool
    public var valid: Bool { !checks.isEmpty && checks.allSatisfy(\.passed) }
    /// The checks that failed, by field.
    public var failedFields: [String] { checks.filter { !$0.passed }.map(\.field) }
}

/// What `evidence --verify` hands the verification path to replay a bundle's detection.
public struct ReplayRequest {
    public var suspect: any TensorSource
    public var suspectPath: String
    public var reference: (any TensorSource)?
    public var referencePath: String?
    public var key: WatermarkKey
    public var options: DetectOptions
    public var settings: EvidenceBundleIndex.Settings
    public var expected: [SelectedTensor]
}

extension EvidenceBundle {
    /// Re-runs a bundle's detection through the one verification path.
    public typealias Replay = (ReplayRequest) throws -> DetectionReport
    /// Re-runs a bundle's lineage test (suspect, reference).
    public typealias LineageReplay = (any TensorSource, any TensorSource) throws -> LineageClaim

    /// Relative tolerance of replayed statistics (BLAS libraries may round sums differently).
    public static let tolerance = 1e-4

    /// Reads a bundle and recomputes everything it claims.
    /// - Parameters:
    ///   - suspect: where the suspect files are now (default: the path recorded in the bundle).
    ///   - reference: where the reference is now (informed bundles; default: the recorded path).
    ///   - before: the timestamp must be earlier than this date.
    /// - Throws: `EvidenceError.unreadable` when the folder is not a bundle; everything else becomes a failed check.
    ///   - replay: the verification path that re-runs the detection (align when the settings say so, pair, score,
    ///     bound paid for the keys searched); the CLI passes `Verifier`'s.
    ///   - alpha: the threshold the verdict is computed at: the verifier's (default 1e-6), never the bundle's.
    public static func verify(bundle: String, suspect: String? = nil, reference: String? = nil, before: Date? = nil,
                              workers: Int? = nil, alpha: Double = 1e-6, replay: Replay,
                              replayLineage: LineageReplay? = nil) async throws -> EvidenceVerification {
        let dir = bundle.hasSuffix("/") ? String(bundle.dropLast()) : bundle
        let indexPath = dir + "/" + indexFile
        guard let indexData = FileManager.default.contents(atPath: indexPath) else {
            throw EvidenceError.unreadable(path: dir, reason: "not an evidence bundle (no readable \(indexFile); write one with `weightmark evidence SUSPECT … --out FOLDER`)")
        }
        let index: EvidenceBundleIndex
        if let d = StrictJSON.duplicateKey(in: indexData) { throw TensorIOError.duplicateJSONKey(path: indexPath, key: d.key, offset: d.offset) }
        do { index = try JSONDecoder().decode(EvidenceBundleIndex.self, from: indexData) } catch {
            throw EvidenceError.unreadable(path: indexPath, reason: "not a WeightMark evidence index (\(error))")
        }
        guard index.format == EvidenceBundleIndex.formatName, EvidenceBundleIndex.readableVersions.contains(index.version) else {
            throw EvidenceError.unreadable(path: indexPath, reason: "format \(index.format) version \(index.version) is not one this tool reads (\(EvidenceBundleIndex.formatName) \(EvidenceBundleIndex.readableVersions))")
        }
        var checks: [EvidenceCheck] = []
        func check(_ field: String, _ ok: Bool, _ detail: String) { checks.append(EvidenceCheck(field: field, passed: ok, detail: detail)) }
        func file(_ name: String) -> [UInt8]? { FileManager.default.contents(atPath: dir + "/" + name).map(Array.init) }
        coverage(of: dir, index: index, indexBytes: Array(indexData), check)
        // Every JSON file of the bundle is read one way only.
        for name in [index.manifest, index.opening, index.releaseKey, index.report].compactMap({ $0 }) {
            if let data = FileManager.default.contents(atPath: dir + "/" + name), let d = StrictJSON.duplicateKey(in: data) {
                check(name, false, "\(name) repeats the key \"\(d.key)\" in one object (byte \(d.offset)): JSON readers disagree on which value counts")
            }
        }

        // The manifest, as published (and time-stamped).
        let manifestBytes = file(index.manifest)
        let manifestHash = manifestBytes.map { SHA256.hash(data: $0).hexString }
        check("manifest", manifestHash == index.manifestSHA256,
              manifestHash == index.manifestSHA256 ? "manifest.json has the recorded SHA-256 \(index.manifestSHA256.prefix(16))…"
                                                   : "manifest.json hashes to \(manifestHash ?? "(missing)"), not the recorded \(index.manifestSHA256)")
        let manifest = manifestBytes.flatMap { try? JSONDecoder().decode(EmbedManifest.self, from: Data($0)) }
        if manifestBytes != nil && manifest == nil { check("manifest", false, "manifest.json is not a WeightMark embed manifest") }

        // The key: an opening (committed) or a revealed release key (not committed).
        var key: WatermarkKey?
        var opening: CommitmentOpening?
        var committed = false
        if let name = index.opening {
            let path = dir + "/" + name
            if let data = file(name), let o = try? JSONDecoder().decode(CommitmentOpening.self, from: Data(data)) {
                opening = o
                key = o.releaseKey
                let c = index.commitment
                check("releaseKey", c != nil && o.releaseKey?.id == o.releaseKeyId && o.releaseKeyId == c?.releaseKeyId && o.releaseId == c?.releaseId,
                      "the opened release key \(o.releaseKey?.id ?? "(malformed)") and release \(o.releaseId) against the bundle's \(c?.releaseKeyId ?? "(none)") / \(c?.releaseId ?? "(none)")")
                check("nonce", c?.nonce == o.nonce, c?.nonce == o.nonce ? "the opening's nonce is the bundle's" : "the opening's nonce \(o.nonce) differs from the bundle's \(c?.nonce ?? "(none)")")
                check("originalTensorsSHA256", c?.originalTensorsSHA256 == o.originalTensorsSHA256,
                      c?.originalTensorsSHA256 == o.originalTensorsSHA256 ? "the committed hash of the original is the bundle's"
                          : "the opening commits to original \(o.originalTensorsSHA256), the bundle claims \(c?.originalTensorsSHA256 ?? "(none)")")
                let recomputed = (try? o.recomputedCommitment(path: path))?.hexString
                var problems: [String] = []
                if recomputed != o.commitment { problems.append("the opened values hash to \(recomputed ?? "(malformed)"), not to the opening's commitment \(o.commitment)") }
                if c?.commitment != o.commitment { problems.append("the bundle claims commitment \(c?.commitment ?? "(none)")") }
                if let manifest {
                    if manifest.release?.commitment != recomputed { problems.append("the manifest published \(manifest.release?.commitment ?? "no commitment")") }
                    if manifest.release?.keyId != o.releaseKeyId || manifest.keyId != o.releaseKeyId { problems.append("the manifest's key id is \(manifest.keyId)") }
                    if CommitmentParameters(manifest: manifest) != o.parameters { problems.append("the manifest's parameters differ from the committed ones") }
                }
                check("commitment", problems.isEmpty && manifest != nil,
                      problems.isEmpty ? "the opening opens commitment \(o.commitment.prefix(16))… published in the manifest" : problems.joined(separator: "; "))
                committed = checks.allSatisfy(\.passed)
            } else {
                check("opening", false, "\(name) is missing or not a WeightMark opening")
            }
        } else if let name = index.releaseKey {
            key = try? WatermarkKey.load(from: dir + "/" + name)
            check("releaseKey", key != nil, key != nil ? "release key \(key!.id) (not committed)" : "\(name) is missing or not a key file")
        } else {
            check("key", false, "the bundle holds neither an opening nor a release key, so detection cannot be replayed")
        }
        check("keyCommitted", index.keyCommitted == committed, index.keyCommitted == committed
              ? (committed ? "the key was committed at release" : "the bundle says the key was not committed") : "the bundle claims keyCommitted = \(index.keyCommitted), the files show \(committed)")

        // The suspect files.
        let suspectPath = suspect ?? index.suspect.path
        if let now = try? fileDigests(of: suspectPath) {
            let recorded = Dictionary(index.suspect.files.map { ($0.file, $0) }, uniquingKeysWith: { a, _ in a })
            let current = Dictionary(now.map { ($0.file, $0) }, uniquingKeysWith: { a, _ in a })
            var mismatched: [String] = []
            for f in Set(recorded.keys).union(current.keys).sorted() where recorded[f] != current[f] {
                mismatched.append(f)
                check("suspect file \(f)", false, recorded[f] == nil ? "\(f) is in \(suspectPath) but not in the bundle"
                      : current[f] == nil ? "\(f) is missing from \(suspectPath)" : "\(f) hashes to \(current[f]!.sha256 ?? "?"), the bundle recorded \(recorded[f]!.sha256 ?? "?")")
            }
            if mismatched.isEmpty { check("suspect files", true, "all \(now.count) files of \(suspectPath) have the recorded SHA-256") }
        } else {
            check("suspect files", false, "cannot read \(suspectPath) (give the suspect's location with --suspect)")
        }

        // The reference, if any: it must be the committed original.
        var referencePath: String?
        if let r = index.reference {
            let path = reference ?? r.path
            referencePath = path
            if let model = try? SafetensorsModel(path: path) {
                let digest = TensorDigest.of(model, workers: ProcessInfo.processInfo.activeProcessorCount).hexString
                check("reference", digest == r.tensorsSHA256, digest == r.tensorsSHA256 ? "the reference's tensors hash to the recorded \(digest.prefix(16))…"
                      : "the reference's tensors hash to \(digest), the bundle recorded \(r.tensorsSHA256)")
                if let opening {
                    check("originalTensorsSHA256", digest == opening.originalTensorsSHA256, digest == opening.originalTensorsSHA256
                          ? "the reference is the original committed at release" : "the reference is not the committed original (\(digest) vs \(opening.originalTensorsSHA256)): it may be a staged copy")
                }
            } else {
                check("reference", false, "cannot read the reference \(path) as safetensors (give its location with --reference)")
            }
        }

        // The timestamp of the manifest.
        var stamp: TimeStampVerification?
        if let t = index.timestamp {
            let tokenPath = dir + "/" + t.token
            do {
                guard let token = file(t.token) else { throw EvidenceError.unreadable(path: tokenPath, reason: "missing") }
                guard SHA256.hash(data: token).hexString == t.tokenSHA256 else {
                    throw EvidenceError.timestamp(path: tokenPath, field: "token", reason: "the file hashes to \(SHA256.hash(data: token).hexString), not to the recorded \(t.tokenSHA256): it was altered")
                }
                guard let caBytes = file(t.ca), SHA256.hash(data: caBytes).hexString == t.caSHA256 else {
                    throw EvidenceError.timestamp(path: dir + "/" + t.ca, field: "ca", reason: "missing, or not the CA certificate recorded (SHA-256 \(t.caSHA256))")
                }
                let roots = try TimeStampVerifier.loadCertificates(path: dir + "/" + t.ca)
                let v = try await TimeStampVerifier.verify(response: token, path: tokenPath, fileDigest: Array(SHA256.hash(data: manifestBytes ?? [])),
                                                           requestNonce: nil, trustRoots: roots)
                stamp = v
                check("timestamp", true, "the manifest's SHA-256 was signed at \(v.genTimeText) by \(v.signer)")
                check("timestamp.genTime", v.genTimeText == t.genTime, v.genTimeText == t.genTime ? "genTime as recorded" : "the token says \(v.genTimeText), the bundle claims \(t.genTime)")
            } catch {
                check("timestamp", false, String(describing: error))
            }
        }
        if let before {
            let iso = ISO8601DateFormatter()
            if let stamp {
                check("timestamp.before", stamp.genTime < before, stamp.genTime < before
                      ? "time-stamped at \(stamp.genTimeText), before \(iso.string(from: before))"
                      : "time-stamped at \(stamp.genTimeText), NOT before \(iso.string(from: before))")
            } else {
                check("timestamp.before", false, "no verified timestamp, so nothing shows the commitment existed before \(iso.string(from: before))")
            }
        }

        // The detection, replayed from the key against the suspect files.
        let claimed = file(index.report).flatMap { try? JSONDecoder().decode(DetectionReport.self, from: Data($0)) }
        if claimed == nil { check("report", false, "\(index.report) is missing or not a detection report") }
        var replayed: DetectionReport?
        if let key, let claimed {
            do {
                var options = DetectOptions()
                options.selection = index.settings.selection
                options.rank = index.settings.rank
                // The verdict at the verifier's threshold; the author's (settings.alpha) only says what was claimed.
                options.alpha = alpha
                if let workers { options.workers = workers }
                guard let format = MarkVersionSearch(rawValue: index.settings.format) else {
                    throw EvidenceError.invalidField(path: indexPath, field: "settings.format", reason: "unknown format \(index.settings.format)")
                }
                options.format = format
                let s = try openTensorSource(path: suspectPath)
                let r = try referencePath.map { try openTensorSource(path: $0) }
                let result = try replay(ReplayRequest(suspect: s, suspectPath: suspectPath, reference: r, referencePath: referencePath,
                                                      key: key, options: options, settings: index.settings,
                                                      expected: manifest?.tensors.map { SelectedTensor(name: $0.name, shape: $0.shape) } ?? []))
                replayed = result
                compare(claimed, result, check)
            } catch {
                check("detection", false, "replaying the detection failed: \(error)")
            }
        }
        // The lineage test, replayed from the suspect and the reference (it reads no key).
        var lineageReplayed: LineageClaim?
        if let claim = index.lineage {
            if let referencePath, let replayLineage {
                do {
                    let replay = try replayLineage(try openTensorSource(path: suspectPath), try openTensorSource(path: referencePath))
                    lineageReplayed = replay
                    check("lineage.verdict", replay.verdict == claim.verdict, "lineage \(claim.verdict) claimed, \(replay.verdict) replayed")
                    check("lineage.log10PExact", close(replay.log10PExact, claim.log10PExact),
                          String(format: "claimed log10 p %.4f, recomputed %.4f", claim.log10PExact, replay.log10PExact))
                    check("lineage.log10PRobust", close(replay.log10PRobust, claim.log10PRobust),
                          String(format: "claimed log10 p %.4f, recomputed %.4f", claim.log10PRobust, replay.log10PRobust))
                    check("lineage.pairsTried", replay.pairsTried == claim.pairsTried, "\(claim.pairsTried) layer pairs claimed, \(replay.pairsTried) replayed")
                } catch {
                    check("lineage", false, "replaying the lineage test failed: \(error)")
                }
            } else {
                check("lineage", false, "the bundle claims a lineage test but \(referencePath == nil ? "no reference is available (pass --reference)" : "this verifier cannot replay it")")
            }
        }
        return EvidenceVerification(index: index, checks: checks, claimed: claimed, replayed: replayed, lineageReplayed: lineageReplayed,
                                    timestamp: stamp, keyCommitted: committed)
    }

    /// Version 2: the index is exactly the encoding its `indexSHA256` was computed from, and every other file in the
    /// folder is listed in `files` with its hash; each failure names the file.
    static func coverage(of dir: String, index: EvidenceBundleIndex, indexBytes: [UInt8], _ check: (String, Bool, String) -> Void) {
        guard index.version >= 2 else {
            check("coverage", true, "a version-1 bundle (before tool 0.4): its files other than the manifest, the timestamp and the suspect's are not bound by hashes; every number is still recomputed")
            return
        }
        var unsealed = index
        unsealed.indexSHA256 = nil
        let expected = (try? json(unsealed)).map { SHA256.hash(data: $0).hexString }
        let exact = (try? json(index)) == indexBytes
        check(indexFile, index.indexSHA256 != nil && expected == index.indexSHA256 && exact,
              index.indexSHA256 == nil ? "\(indexFile) has no indexSHA256"
              : !exact ? "\(indexFile) is not byte for byte the encoding it was sealed as: it was edited"
              : expected == index.indexSHA256 ? "\(indexFile) hashes to its recorded indexSHA256" : "\(indexFile)'s content hashes to \(expected ?? "?"), not to its indexSHA256 \(index.indexSHA256!): it was edited")
        let listed = index.files ?? [:]
        if listed.isEmpty { check("files", false, "\(indexFile) lists no files") }
        let present = Set((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
        for (name, hash) in listed.sorted(by: { $0.key < $1.key }) {
            guard !name.contains("/"), name != indexFile else { check(name, false, "\(indexFile) lists \"\(name)\", which is not a file of the bundle"); continue }
            guard let bytes = FileManager.default.contents(atPath: dir + "/" + name) else { check(name, false, "\(name) is listed in \(indexFile) but missing"); continue }
            let h = SHA256.hash(data: bytes).hexString
            check(name, h == hash, h == hash ? "\(name) has the recorded SHA-256" : "\(name) hashes to \(h), not the recorded \(hash): it was altered")
        }
        for name in present.subtracting(listed.keys).subtracting([indexFile]).sorted() {
            check(name, false, "\(name) is in the bundle folder but not listed in \(indexFile): it was added after the bundle was written")
        }
    }

    static func close(_ a: Double, _ b: Double) -> Bool { abs(a - b) <= tolerance * max(1, abs(a), abs(b)) }

    /// Compares the claimed report with the replayed one, statistic by statistic.
    static func compare(_ claimed: DetectionReport, _ replay: DetectionReport, _ check: (String, Bool, String) -> Void) {
        check("keyId", claimed.keyId == replay.keyId, "report made with key \(claimed.keyId), replayed with \(replay.keyId)")
        check("formatVersion", claimed.formatVersion == replay.formatVersion, "format v\(claimed.formatVersion) claimed, v\(replay.formatVersion) replayed")
        check("combinedZ", close(claimed.combinedZ, replay.combinedZ),
              String(format: "claimed Z = %.6f, recomputed %.6f", claimed.combinedZ, replay.combinedZ))
        check("log10PValueBound", close(claimed.log10PValueBound, replay.log10PValueBound),
              String(format: "claimed log10 p ≤ %.4f, recomputed %.4f", claimed.log10PValueBound, replay.log10PValueBound))
        check("detected", claimed.detected == replay.detected, "claimed \(claimed.detected ? "detected" : "not detected") at the author's threshold \(String(format: "%.0e", claimed.alpha)), recomputed \(replay.detected ? "detected" : "not detected") at the verifier's \(String(format: "%.0e", replay.alpha))")
        check("tileStatistics", claimed.tileStatistics == replay.tileStatistics, "pilot and scored tile positions")
        check("mode", claimed.mode == replay.mode, "\(claimed.mode.rawValue) claimed, \(replay.mode.rawValue) replayed")
        check("keysTried", (claimed.keySearch?.keysTried ?? 1) == (replay.keySearch?.keysTried ?? 1),
              "the bound pays for \(claimed.keySearch?.keysTried ?? 1) keys claimed, \(replay.keySearch?.keysTried ?? 1) replayed")
        check("formatsTried", (claimed.formatsTried ?? 1) == (replay.formatsTried ?? 1), "formats searched: \(claimed.formatsTried ?? 1) claimed, \(replay.formatsTried ?? 1) replayed")
        let byName = Dictionary(replay.tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var bad: [String] = []
        for t in claimed.tensors {
            guard let r = byName[t.name], close(t.correlation, r.correlation), close(t.norm, r.norm), t.weight == r.weight,
                  t.hypothesis == r.hypothesis, t.erased == r.erased else { bad.append(t.name); continue }
        }
        if claimed.tensors.count != replay.tensors.count { bad.append("(\(claimed.tensors.count) tensors claimed, \(replay.tensors.count) recomputed)") }
        check("tensors", bad.isEmpty, bad.isEmpty ? "all \(claimed.tensors.count) per-tensor statistics recomputed" : "per-tensor statistics differ: \(bad.prefix(5).joined(separator: ", "))")
    }
}

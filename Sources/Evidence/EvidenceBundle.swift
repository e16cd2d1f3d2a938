import Crypto
import Foundation
import TensorIO
import Watermarking
import X509

/// The index of an evidence bundle (`bundle.json`): what was detected, with which key and settings, in which files.
public struct EvidenceBundleIndex: Sendable, Codable, Equatable {
    public static let formatName = "weightmark-evidence"
    /// 2 (tool 0.4): `files` binds every other file of the bundle and `indexSHA256` the index itself. Version 1
    /// bundles still verify, with the coverage they had.
    public static let fileVersion = 2
    public static let readableVersions = 1...2

    public struct Suspect: Sendable, Codable, Equatable {
        /// The path given to `evidence` (replay looks there unless `--suspect` says otherwise).
        public var path: String
        /// Every regular file of the suspect (relative to `path` for a folder; the file name for a file).
        public var files: [FileDigest]
    }
    public struct Reference: Sendable, Codable, Equatable {
        public var path: String
        /// `TensorDigest` of the reference, hex: equals the committed original's when the reference is the original.
        public var tensorsSHA256: String
    }
    /// The opened commitment, as the bundle claims it (each field is checked against the opening and the manifest).
    public struct Commitment: Sendable, Codable, Equatable {
        public var commitment: String
        public var releaseId: String
        public var releaseKeyId: String
        public var nonce: String
        public var originalTensorsSHA256: String
    }
    public struct Timestamp: Sendable, Codable, Equatable {
        public var token: String
        /// SHA-256 of the token file: its certificates are not covered by the TSA's signature, so the bundle pins
        /// every byte.
        public var tokenSHA256: String
        public var ca: String
        public var caSHA256: String
        public var genTime: String
    }
    /// The detection settings replayed by `--verify`.
    public struct Settings: Sendable, Codable, Equatable {
        public var format: String
        public var alpha: Double
        public var rank: Int
        public var selection: TensorSelection
        /// Whether the suspect was aligned to the reference before scoring (nil in bundles before tool 0.4: no).
        public var align: Bool?
        /// Attention heads given for the alignment (nil: from the reference's config.json).
        public var heads: Int?
        /// Keys searched to find the release (the owner key, its store, default ids); the bound pays for them.
        public var keysTried: Int?
        public init(format: String, alpha: Double, rank: Int, selection: TensorSelection, align: Bool? = nil, heads: Int? = nil,
                    keysTried: Int? = nil) {
            self.format = format; self.alpha = alpha; self.rank = rank; self.selection = selection
            self.align = align; self.heads = heads; self.keysTried = keysTried
        }
    }

    public var format: String
    public var version: Int
    public var tool: String
    public var markFormatVersion: Int
    public var created: String
    public var suspect: Suspect
    public var reference: Reference?
    public var manifest: String
    public var manifestSHA256: String
    /// The opening file (committed keys) or nil.
    public var opening: String?
    /// The release subkey file when no opening was given (uncommitted).
    public var releaseKey: String?
    public var commitment: Commitment?
    public var keyCommitted: Bool
    public var timestamp: Timestamp?
    public var settings: Settings
    public var report: String
    /// The passive lineage test's verdict on the same pair (informed bundles): its full report is `lineage.json`.
    public var lineage: LineageClaim? = nil
    /// SHA-256 of every other file in the bundle folder, by name (version 2).
    public var files: [String: String]? = nil
    /// SHA-256 of this index as written with this field absent (version 2); the file must be exactly that encoding.
    public var indexSHA256: String? = nil
}

/// What a bundle claims of the lineage test (docs/LINEAGE.md), replayed by `evidence --verify` from the suspect and
/// the reference; the whole report is the bundle's `lineage.json`.
public struct LineageClaim: Sendable, Codable, Equatable {
    public var file: String
    public var verdict: String
    public var log10PExact: Double
    public var log10PRobust: Double
    public var pairsTried: Int
    public init(file: String = EvidenceBundle.lineageFile, verdict: String, log10PExact: Double, log10PRobust: Double, pairsTried: Int) {
        self.file = file; self.verdict = verdict; self.log10PExact = log10PExact; self.log10PRobust = log10PRobust; self.pairsTried = pairsTried
    }
}

/// One check of `evidence --verify`.
public struct EvidenceCheck: Sendable, Codable, Equatable {
    public var field: String
    public var passed: Bool
    public var detail: String
}

/// Writing and verifying evidence bundles: a folder a third party can replay the verdict from.
public enum EvidenceBundle {
    public static let indexFile = "bundle.json"
    public static let manifestFile = "manifest.json"
    public static let openingFile = "opening.json"
    public static let releaseKeyFile = "release-key.json"
    public static let tokenFile = "timestamp.tsr"
    public static let caFile = "tsa-ca.pem"
    public static let reportFile = "report.json"
    public static let readmeFile = "README.txt"
    public static let lineageFile = "lineage.json"

    /// SHA-256 of every regular file of `path` (a file, or a folder walked recursively), sorted by relative path.
    public static func fileDigests(of path: String) throws -> [FileDigest] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw EvidenceError.unreadable(path: path, reason: "no such file or folder")
        }
        guard isDir.boolValue else {
            var d = try FileDigest.of(file: path)
            d.file = (path as NSString).lastPathComponent
            return [d]
        }
        let base = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath()
        var out: [FileDigest] = []
        let e = FileManager.default.enumerator(at: base, includingPropertiesForKeys: [.isRegularFileKey])
        while let url = e?.nextObject() as? URL {
            guard (try? url.resourceValues(forKeys: [.isRegularFileKey]))?.isRegularFile == true else { continue }
            let full = url.resolvingSymlinksInPath().path
            var d = try FileDigest.of(file: full)
            d.file = String(full.dropFirst(base.path.count).drop { $0 == "/" })
            out.append(d)
        }
        return out.sorted { $0.file < $1.file }
    }

    static func json<T: Encodable>(_ v: T) throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return Array(try e.encode(v)) + [0x0A]
    }

    public struct Inputs {
        public var suspectPath: String
        public var reference: (path: String, tensorsSHA256: [UInt8])?
        public var manifestPath: String
        public var opening: CommitmentOpening?
        public var releaseKey: WatermarkKey?
        public var keyCommitted: Bool
        public var timestamp: (tokenPath: String, caPath: String, verification: TimeStampVerification)?
        public var report: DetectionReport
        public var settings: EvidenceBundleIndex.Settings
        /// The lineage test's claim and its full report (JSON bytes), when it ran.
        public var lineage: (claim: LineageClaim, reportJSON: [UInt8])?
        public init(suspectPath: String, reference: (path: String, tensorsSHA256: [UInt8])?, manifestPath: String,
                    opening: CommitmentOpening?, releaseKey: WatermarkKey?, keyCommitted: Bool,
                    timestamp: (tokenPath: String, caPath: String, verification: TimeStampVerification)?,
                    report: DetectionReport, settings: EvidenceBundleIndex.Settings, lineage: (claim: LineageClaim, reportJSON: [UInt8])? = nil) {
            self.suspectPath = suspectPath; self.reference = reference; self.manifestPath = manifestPath; self.opening = opening
            self.releaseKey = releaseKey; self.keyCommitted = keyCommitted; self.timestamp = timestamp; self.report = report
            self.settings = settings; self.lineage = lineage
        }
    }

    /// Writes the bundle folder `out` (built in a temporary sibling folder and renamed into place; an existing `out` is
    /// replaced only when `overwrite`). Secret-bearing files (opening, release key) are created 0600.
    public static func write(_ inputs: Inputs, to out: String, overwrite: Bool) throws -> EvidenceBundleIndex {
        let fm = FileManager.default
        let target = out.hasSuffix("/") ? String(out.dropLast()) : out
        if fm.fileExists(atPath: target) && !overwrite { throw TensorIOError.outputExists(path: target) }
        guard let manifestBytes = fm.contents(atPath: inputs.manifestPath) else {
            throw EvidenceError.unreadable(path: inputs.manifestPath, reason: "cannot read the manifest")
        }
        let staging = target + ".partial-\(UUID().uuidString.prefix(8))"
        try fm.createDirectory(atPath: staging, withIntermediateDirectories: false)
        do {
            func put(_ name: String, _ bytes: [UInt8], mode: mode_t = 0o644) throws {
                try AtomicFileWriter.write(bytes, to: staging + "/" + name, overwrite: false, mode: mode)
            }
            try put(manifestFile, Array(manifestBytes))
            var stampHashes = ("", "")
            if let o = inputs.opening { try put(openingFile, try o.fileContents(), mode: 0o600) }
            if let k = inputs.releaseKey, inputs.opening == nil { try put(releaseKeyFile, try k.fileContents(), mode: 0o600) }
            if let t = inputs.timestamp {
                guard let token = fm.contents(atPath: t.tokenPath) else { throw EvidenceError.unreadable(path: t.tokenPath, reason: "cannot read the timestamp token") }
                guard let ca = fm.contents(atPath: t.caPath) else { throw EvidenceError.unreadable(path: t.caPath, reason: "cannot read the CA certificate") }
                try put(tokenFile, Array(token))
                try put(caFile, Array(ca))
                stampHashes = (SHA256.hash(data: token).hexString, SHA256.hash(data: ca).hexString)
            }
            try put(reportFile, try json(inputs.report))
            if let l = inputs.lineage { try put(lineageFile, l.reportJSON) }
            var index = EvidenceBundleIndex(
                format: EvidenceBundleIndex.formatName, version: EvidenceBundleIndex.fileVersion,
                tool: "weightmark \(WeightMarkVersion.toolVersion)", markFormatVersion: inputs.report.formatVersion,
                created: ISO8601DateFormatter().string(from: Date()),
                suspect: .init(path: inputs.suspectPath, files: try fileDigests(of: inputs.suspectPath)),
                reference: inputs.reference.map { .init(path: $0.path, tensorsSHA256: $0.tensorsSHA256.hexString) },
                manifest: manifestFile, manifestSHA256: SHA256.hash(data: manifestBytes).hexString,
                opening: inputs.opening == nil ? nil : openingFile,
                releaseKey: inputs.opening == nil && inputs.releaseKey != nil ? releaseKeyFile : nil,
                commitment: inputs.opening.map { .init(commitment: $0.commitment, releaseId: $0.releaseId, releaseKeyId: $0.releaseKeyId,
                                                        nonce: $0.nonce, originalTensorsSHA256: $0.originalTensorsSHA256) },
                keyCommitted: inputs.keyCommitted,
                timestamp: inputs.timestamp.map { .init(token: tokenFile, tokenSHA256: stampHashes.0, ca: caFile, caSHA256: stampHashes.1,
                                                        genTime: $0.verification.genTimeText) },
                settings: inputs.settings, report: reportFile)
            index.lineage = inputs.lineage?.claim
            try put(readmeFile, Array(readme(index, report: inputs.report).utf8))
            // Every file written so far is bound by its hash; the index by its own (docs/FORMAT.md, "Evidence bundles").
            var covered: [String: String] = [:]
            for name in try fm.contentsOfDirectory(atPath: staging) {
                guard let bytes = fm.contents(atPath: staging + "/" + name) else { throw EvidenceError.unreadable(path: staging + "/" + name, reason: "cannot read back") }
                covered[name] = SHA256.hash(data: bytes).hexString
            }
            var sealed = index
            sealed.files = covered
            sealed.indexSHA256 = SHA256.hash(data: try json(sealed)).hexString
            try put(indexFile, try json(sealed))
            if overwrite && fm.fileExists(atPath: target) { try fm.removeItem(atPath: target) }
            try fm.moveItem(atPath: staging, toPath: target)
            return sealed
        } catch {
            try? fm.removeItem(atPath: staging)
            throw error
        }
    }

    /// The plain-language README.txt of a bundle.
    static func readme(_ b: EvidenceBundleIndex, report r: DetectionReport) -> String {
        let p = String(format: "%.1e", pow(10, r.log10PValueBound))
        var s = """
        WeightMark evidence bundle
        ==========================

        What this claims
          The model at \(b.suspect.path) carries the watermark of key \(r.keyId)\(b.commitment.map { " (release \($0.releaseId))" } ?? "").
          Detection result: \(r.detected ? "DETECTED" : "NOT DETECTED"), score Z = \(String(format: "%.2f", r.combinedZ)).
          If the model were NOT watermarked with this key, a score this high would happen with probability at most \(p)
          (a rigorous bound that holds whatever the weights are; the decision threshold is \(String(format: "%.0e", r.alpha))).

        Why the key matters
        """
        if b.keyCommitted, let c = b.commitment {
            s += """

              The key was committed when the model was released: the manifest (manifest.json) published the commitment
              \(c.commitment), and opening.json opens it (it reveals the release's key, a random nonce, the hash of the
              original model and the marking parameters). A key found later by trying many keys could not open it.
            """
        } else {
            s += """

              CAUTION: \(DetectionKey.caution). Without a commitment, a large score can be staged by trying many keys, so this
              bundle alone does not prove the mark was put there before the dispute.
            """
        }
        if let t = b.timestamp {
            s += """


            When
              An independent time-stamping authority signed the manifest's hash at \(t.genTime) (timestamp.tsr, checked
              against its CA certificate tsa-ca.pem). So the commitment existed at that time.
            """
        }
        s += """


        Files
          bundle.json    index: settings, hashes of every suspect file, what the bundle claims
          manifest.json  the manifest published at release (SHA-256 \(b.manifestSHA256))
          report.json    the full detection report (per-tensor statistics, hypotheses used)
        \(b.opening != nil ? "  opening.json   the opened commitment (reveals this release's key only, never the owner key)\n" : "")\(b.releaseKey != nil ? "  release-key.json  the key detection used (not committed)\n" : "")\(b.timestamp != nil ? "  timestamp.tsr  RFC 3161 timestamp of manifest.json; tsa-ca.pem: the authority's CA certificate\n" : "")
        How to check it yourself
          weightmark evidence --verify THIS_FOLDER [--suspect PATH] [--before DATE]
        recomputes every hash and every number (it re-runs the detection on the suspect files) and says which part, if
        any, does not hold. Format: docs/FORMAT.md of WeightMark \(WeightMarkVersion.toolVersion) (mark format v\(b.markFormatVersion)).

        """
        return s
    }
}

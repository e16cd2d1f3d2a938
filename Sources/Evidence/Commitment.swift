import Crypto
import Foundation
import TensorIO
import Watermarking

/// What a release commitment binds besides the key: how the model was marked.
public struct CommitmentParameters: Sendable, Codable, Equatable {
    public var markFormat: Int
    /// δ = ‖ΔW‖/‖W‖ intended per tensor.
    public var delta: Double
    public var shaping: String
    public var rank: Int
    public var include: [String]
    public var exclude: [String]
    public var minimumElements: Int

    public init(markFormat: MarkVersion, delta: Double, shaping: WatermarkShaping, rank: Int, selection: TensorSelection) {
        self.markFormat = markFormat.rawValue
        self.delta = delta
        self.shaping = shaping.rawValue
        self.rank = rank
        include = selection.include
        exclude = selection.exclude
        minimumElements = selection.minimumElements
    }

    /// The parameters `embed` recorded in a manifest.
    public init(manifest m: EmbedManifest) {
        self.init(markFormat: MarkVersion(rawValue: m.formatVersion) ?? .v2, delta: m.delta, shaping: m.shaping, rank: m.rank,
                  selection: m.selection)
        markFormat = m.formatVersion
    }

    /// Unambiguous bytes: each field as `LE32(length) ‖ UTF-8 "name=value"`, in the order format, delta (the 16 hex
    /// digits of the IEEE-754 binary64 bit pattern, most significant first), shaping, rank, min-elements, then one
    /// `include=glob` per include glob and one `exclude=glob` per exclude glob, in the order given.
    public var canonicalBytes: [UInt8] {
        var fields = ["format=v\(markFormat)", "delta=" + String(format: "%016llx", delta.bitPattern), "shaping=\(shaping)",
                      "rank=\(rank)", "min-elements=\(minimumElements)"]
        fields += include.map { "include=\($0)" } + exclude.map { "exclude=\($0)" }
        var out: [UInt8] = []
        for f in fields {
            let b = Array(f.utf8)
            withUnsafeBytes(of: UInt32(b.count).littleEndian) { out += $0 }
            out += b
        }
        return out
    }
}

/// The commitment made at embed time and its opening.
///
///     C = SHA-256("weightmark/commitment/v1" ‖ 0x00 ‖ release subkey (32 B) ‖ nonce (32 B)
///                 ‖ SHA-256 of the original's tensors (32 B) ‖ canonical parameters)
///
/// C goes into the public manifest before release; the opening (subkey, nonce, digest, parameters) stays with the
/// owner. Opening C later proves that this subkey, this original and these parameters were fixed when C was
/// published (a timestamp of the manifest proves when): a key found by searching after the leak cannot open it.
public enum ReleaseCommitment {
    public static let domainTag = Array("weightmark/commitment/v1".utf8) + [0]

    public static func compute(releaseSecret: [UInt8], nonce: [UInt8], originalTensorsSHA256: [UInt8],
                               parameters: CommitmentParameters) -> [UInt8] {
        precondition(releaseSecret.count == 32 && nonce.count == 32 && originalTensorsSHA256.count == 32,
                     "commitment inputs are 32-byte values")
        var h = SHA256()
        h.update(data: domainTag)
        h.update(data: releaseSecret)
        h.update(data: nonce)
        h.update(data: originalTensorsSHA256)
        h.update(data: parameters.canonicalBytes)
        return Array(h.finalize())
    }

    /// 32 fresh bytes from the system's secure generator.
    public static func freshNonce() -> [UInt8] {
        SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
    }
}

/// The secret half of a release commitment: the file `embed` writes with mode 0600 (`--opening`).
public struct CommitmentOpening: Sendable, Codable, Equatable {
    public static let formatName = "weightmark-opening"
    public static let fileVersion = 1

    public var format: String
    public var version: Int
    public var releaseId: String
    /// Key id of the owner key the subkey was derived from (the owner key itself is never revealed).
    public var ownerKeyId: String
    /// Key id of the release subkey (= the manifest's `keyId`).
    public var releaseKeyId: String
    /// The release subkey, hex.
    public var releaseSecret: String
    public var nonce: String
    public var originalTensorsSHA256: String
    public var parameters: CommitmentParameters
    public var commitment: String
    public var created: String

    /// Makes the opening of a new commitment.
    public init(releaseId: String, owner: WatermarkKey, release: WatermarkKey, nonce: [UInt8], originalTensorsSHA256: [UInt8],
                parameters: CommitmentParameters, created: Date = Date()) {
        format = Self.formatName
        version = Self.fileVersion
        self.releaseId = releaseId
        ownerKeyId = owner.id
        releaseKeyId = release.id
        releaseSecret = release.secret.hexString
        self.nonce = nonce.hexString
        self.originalTensorsSHA256 = originalTensorsSHA256.hexString
        self.parameters = parameters
        commitment = ReleaseCommitment.compute(releaseSecret: release.secret, nonce: nonce,
                                               originalTensorsSHA256: originalTensorsSHA256, parameters: parameters).hexString
        self.created = ISO8601DateFormatter().string(from: created)
    }

    /// The release subkey, once `validated(path:)` has passed.
    public var releaseKey: WatermarkKey? {
        [UInt8](hexadecimal: releaseSecret).flatMap { $0.count == 32 ? WatermarkKey(secret: $0) : nil }
    }

    /// Recomputes C from the opened values.
    /// - Throws: `EvidenceError.invalidField` naming the malformed field.
    public func recomputedCommitment(path: String) throws -> [UInt8] {
        func bytes32(_ field: String, _ text: String) throws -> [UInt8] {
            guard let b = [UInt8](hexadecimal: text), b.count == 32 else {
                throw EvidenceError.invalidField(path: path, field: field, reason: "expected 64 hex digits")
            }
            return b
        }
        return ReleaseCommitment.compute(releaseSecret: try bytes32("releaseSecret", releaseSecret), nonce: try bytes32("nonce", nonce),
                                         originalTensorsSHA256: try bytes32("originalTensorsSHA256", originalTensorsSHA256),
                                         parameters: parameters)
    }

    /// Checks that the file is an opening and that it opens its own commitment.
    /// - Throws: `EvidenceError.invalidField` naming the first field that is wrong.
    public func validated(path: String) throws -> CommitmentOpening {
        guard format == Self.formatName else {
            throw EvidenceError.invalidField(path: path, field: "format", reason: "is \"\(format)\", expected \"\(Self.formatName)\"")
        }
        guard version == Self.fileVersion else {
            throw EvidenceError.invalidField(path: path, field: "version", reason: "\(version) is not supported (this tool reads \(Self.fileVersion))")
        }
        guard ReleaseKey.isValid(releaseID: releaseId) else { throw EvidenceError.invalidField(path: path, field: "releaseId", reason: "not a release id") }
        let c = try recomputedCommitment(path: path)
        guard let key = releaseKey, key.id == releaseKeyId else {
            throw EvidenceError.invalidField(path: path, field: "releaseKeyId", reason: "does not match the releaseSecret")
        }
        guard c.hexString == commitment.lowercased() else {
            throw EvidenceError.invalidField(path: path, field: "commitment", reason: "the opened values hash to \(c.hexString), not to the recorded \(commitment); the opening was altered")
        }
        return self
    }

    /// Checks that this opening opens the commitment a manifest published, and that the manifest describes the same
    /// release, key and parameters.
    /// - Throws: `EvidenceError.invalidField` naming the manifest field that disagrees.
    public func check(against manifest: EmbedManifest, path: String) throws {
        guard let r = manifest.release else {
            throw EvidenceError.invalidField(path: path, field: "release", reason: "the manifest records no release commitment (marked without --release, or by a tool older than 0.3)")
        }
        let c = try recomputedCommitment(path: path).hexString
        guard r.commitment.lowercased() == c else {
            throw EvidenceError.invalidField(path: path, field: "commitment", reason: "the opening hashes to \(c), but the manifest published \(r.commitment)")
        }
        guard r.id == releaseId else { throw EvidenceError.invalidField(path: path, field: "release.id", reason: "manifest says \(r.id), opening says \(releaseId)") }
        guard r.keyId == releaseKeyId, manifest.keyId == releaseKeyId else {
            throw EvidenceError.invalidField(path: path, field: "keyId", reason: "manifest says \(manifest.keyId), opening says \(releaseKeyId)")
        }
        guard CommitmentParameters(manifest: manifest) == parameters else {
            throw EvidenceError.invalidField(path: path, field: "parameters", reason: "the manifest's format, δ, shaping, rank or selection differ from the committed ones")
        }
    }

    /// Reads and validates an opening file.
    public static func load(from path: String) throws -> CommitmentOpening {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EvidenceError.unreadable(path: path, reason: FileManager.default.fileExists(atPath: path)
                ? "cannot read the opening file (permissions?)" : "no such opening file (embed writes it next to the manifest, OUT.opening.json)")
        }
        let o: CommitmentOpening
        if let d = StrictJSON.duplicateKey(in: data) { throw TensorIOError.duplicateJSONKey(path: path, key: d.key, offset: d.offset) }
        do { o = try JSONDecoder().decode(CommitmentOpening.self, from: data) } catch {
            throw EvidenceError.unreadable(path: path, reason: "not a WeightMark opening file (the .opening.json written by `embed`)")
        }
        return try o.validated(path: path)
    }

    /// The file's JSON text.
    public func fileContents() throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return Array(try e.encode(self)) + [0x0A]
    }

    /// Writes the opening atomically with mode 0600 from its first byte.
    public func save(to path: String, overwrite: Bool) throws {
        try AtomicFileWriter.write(try fileContents(), to: path, overwrite: overwrite, mode: 0o600)
    }
}

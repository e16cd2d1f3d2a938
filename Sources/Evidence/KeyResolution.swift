import Foundation
import Watermarking

/// The key a detection runs with, and whether it was committed before the dispute.
public struct DetectionKey: Sendable {
    public var key: WatermarkKey
    public var status: KeyCommitmentStatus
    public var opening: CommitmentOpening?

    /// The caution `detect` prints when the key was not committed.
    public static let caution = "this key was not committed before the dispute; a key search could produce this score"

    /// Picks the detection key from what the user gave.
    ///
    /// - An opening: its release subkey (checked against `owner` and `releaseID` when given); committed when it opens
    ///   the commitment of `manifest`.
    /// - An owner key and a release id (given, or recorded in `manifest`): the derived subkey, checked against the
    ///   manifest's key id; not committed (only an opening proves the commitment).
    /// - An owner key alone, no release: the owner key itself (models marked without a release); not committed.
    /// - Throws: `EvidenceError` when the pieces disagree (naming the file and field).
    public static func resolve(owner: WatermarkKey?, releaseID: String?, opening: (CommitmentOpening, path: String)?,
                               manifest: (EmbedManifest, path: String)?) throws -> DetectionKey {
        if let (o, path) = opening {
            guard let key = o.releaseKey else { throw EvidenceError.invalidField(path: path, field: "releaseSecret", reason: "expected 64 hex digits") }
            if let releaseID, releaseID != o.releaseId {
                throw EvidenceError.invalidField(path: path, field: "releaseId", reason: "the opening is for release \(o.releaseId), not --release \(releaseID)")
            }
            if let owner, try ReleaseKey.derive(owner: owner, releaseID: o.releaseId).id != o.releaseKeyId {
                throw EvidenceError.invalidField(path: path, field: "releaseKeyId", reason: "key \(owner.id) does not derive this release's key \(o.releaseKeyId): the opening belongs to another owner key")
            }
            guard let (m, manifestPath) = manifest else {
                return DetectionKey(key: key, status: KeyCommitmentStatus(committed: false, releaseId: o.releaseId, commitment: o.commitment,
                    note: "an opening was given but no manifest to check it against (pass --manifest: the commitment counts only as published before the dispute); " + caution), opening: o)
            }
            do { try o.check(against: m, path: path) } catch let EvidenceError.invalidField(_, field, reason) {
                throw EvidenceError.invalidField(path: path, field: field, reason: reason + " (manifest \(manifestPath))")
            }
            return DetectionKey(key: key, status: KeyCommitmentStatus(committed: true, releaseId: o.releaseId, commitment: o.commitment,
                note: "committed: the opening opens commitment \(o.commitment.prefix(16))… of release \(o.releaseId) published in \(manifestPath) (a timestamp of that manifest proves when)"), opening: o)
        }
        guard let owner else {
            throw EvidenceError.unreadable(path: "(no key)", reason: "give --key OWNER.key (with --release ID for a release) or --opening FILE")
        }
        let recorded = manifest?.0.release
        if let releaseID, let recorded, recorded.id != releaseID {
            throw EvidenceError.invalidField(path: manifest!.path, field: "release.id", reason: "the manifest is for release \(recorded.id), not --release \(releaseID)")
        }
        guard let id = releaseID ?? recorded?.id else {
            return DetectionKey(key: owner, status: KeyCommitmentStatus(committed: false, note: caution), opening: nil)
        }
        let key = try ReleaseKey.derive(owner: owner, releaseID: id)
        if let recorded, recorded.keyId != key.id {
            throw EvidenceError.invalidField(path: manifest!.path, field: "release.keyId", reason: "release \(id) of key \(owner.id) has key id \(key.id), but the manifest records \(recorded.keyId): wrong owner key")
        }
        let note = recorded != nil
            ? "release \(id): the subkey matches the manifest's key id, but the commitment was not opened (pass --opening); " + caution
            : "release \(id): " + caution
        return DetectionKey(key: key, status: KeyCommitmentStatus(committed: false, releaseId: id, commitment: recorded?.commitment, note: note), opening: nil)
    }
}

/// The verdict a key found by searching must carry: Bonferroni over every key tried.
public enum KeySearch {
    /// log10 of the bound for the best of `keysTried` keys: the single-key bound times `keysTried` (capped at 1).
    public static func correctedLog10Bound(_ report: DetectionReport, keysTried: Int) -> Double {
        min(0, report.log10PValueBound + Foundation.log10(Double(max(1, keysTried))))
    }

    /// Whether the best of `keysTried` keys is "detected" once the search is paid for.
    public static func isDetected(_ report: DetectionReport, keysTried: Int) -> Bool {
        !report.tensors.isEmpty && correctedLog10Bound(report, keysTried: keysTried) <= Foundation.log10(report.alpha)
    }
}

/// A key a verification tries, and where it came from.
public struct KeyCandidate: Sendable {
    public enum Origin: String, Sendable, Codable {
        /// The owner key itself (models marked with `--no-release`, or by tools before 0.3).
        case ownerKey = "owner key"
        /// A release subkey named by --release, --opening or --manifest.
        case named = "named release"
        /// A release recorded in the owner's key store.
        case keyStore = "key store"
        /// A default release id (`r1`…`rN`) tried without a record.
        case enumerated = "default release id"
    }

    public var key: WatermarkKey
    public var releaseId: String?
    public var origin: Origin
    public var status: KeyCommitmentStatus
    public var opening: CommitmentOpening?
    /// The key store record of this release, when it came from the store.
    public var record: KeyStoreRecord?
    /// The file given on the command line this key came from (owner key or opening), for commands that re-check.
    public var source: String?

    /// "owner key 1a2b…", "release r3 (key store)".
    public var label: String {
        if let releaseId { return "release \(releaseId) (\(origin.rawValue))" }
        return "owner key"
    }
}

/// Every key one question is asked with: resolved once, the same way for every command (docs/FORMAT.md, "Keys tried").
///
/// - `--opening`, `--release` or a `--manifest` that records a release name one key: exactly that release's subkey.
/// - A manifest of a model marked without a release: the owner key.
/// - The owner key alone: the owner key, every release recorded in its key store, and the default release ids
///   the store reserved (`r1…r16` when there is no store, so a lost store still finds default releases). Each is a
///   hypothesis, paid in the bound.
public struct KeyCandidates: Sendable {
    public var candidates: [KeyCandidate]
    /// What the resolution noticed (unreadable store records, a missing store), for the report and stderr.
    public var notes: [String]

    public var count: Int { candidates.count }

    public init(candidates: [KeyCandidate], notes: [String] = []) {
        self.candidates = candidates
        self.notes = notes
    }

    /// One key, as given.
    public static func single(_ key: WatermarkKey, status: KeyCommitmentStatus? = nil) -> KeyCandidates {
        KeyCandidates(candidates: [KeyCandidate(key: key, releaseId: status?.releaseId, origin: status?.releaseId == nil ? .ownerKey : .named,
                                                status: status ?? KeyCommitmentStatus(committed: false, note: DetectionKey.caution),
                                                opening: nil, record: nil)])
    }

    /// Resolves what the user gave into the keys to try.
    /// - Parameters:
    ///   - ownerPath: the owner key file's path (its store is `ownerPath.store`).
    ///   - enumerate: default release ids `r1…rN` to try (0: none); nil: every id the store reserved, or
    ///     `r1…r16` when there is no store (docs/FORMAT.md, "Keys tried").
    /// - Throws: `EvidenceError` when the pieces disagree (naming the file and field).
    public static func resolve(owner: WatermarkKey?, ownerPath: String?, releaseID: String?,
                               opening: (CommitmentOpening, path: String)?, manifest: (EmbedManifest, path: String)?,
                               enumerate: Int? = nil) throws -> KeyCandidates {
        if opening != nil || releaseID != nil || manifest != nil || owner == nil {
            let d = try DetectionKey.resolve(owner: owner, releaseID: releaseID, opening: opening, manifest: manifest)
            return KeyCandidates(candidates: [KeyCandidate(key: d.key, releaseId: d.status.releaseId,
                                                           origin: d.status.releaseId == nil ? .ownerKey : .named,
                                                           status: d.status, opening: d.opening, record: nil)])
        }
        let owner = owner!
        var out = [KeyCandidate(key: owner, releaseId: nil, origin: .ownerKey,
                                status: KeyCommitmentStatus(committed: false, note: DetectionKey.caution), opening: nil, record: nil)]
        var notes: [String] = []
        var seen: Set<String> = [owner.id]
        let store = ownerPath.map { KeyStore(keyPath: $0) }
        let enumerate = enumerate ?? (store?.exists == true ? store!.highestDefaultIndex() : KeyStore.defaultEnumeratedReleases)
        if let store {
            let (records, unreadable) = try store.records()
            for (path, reason) in unreadable { notes.append("key store record \(path) skipped: \(reason)") }
            if !store.exists { notes.append("no key store at \(store.path); trying the owner key" + (enumerate > 0 ? " and the default release ids r1…r\(enumerate)" : " only")) }
            for r in records.sorted(by: { $0.created < $1.created }) {
                guard r.ownerKeyId == owner.id else {
                    notes.append("key store record of release \(r.releaseId ?? "(none)") belongs to key \(r.ownerKeyId), not \(owner.id): skipped")
                    continue
                }
                guard let id = r.releaseId else { continue } // marked with the owner key itself: already tried
                let key = try ReleaseKey.derive(owner: owner, releaseID: id)
                guard key.id == r.markKeyId else {
                    notes.append("key store record of release \(id) names key \(r.markKeyId), but the owner key derives \(key.id): skipped")
                    continue
                }
                guard seen.insert(key.id).inserted else { continue }
                out.append(KeyCandidate(key: key, releaseId: id, origin: .keyStore, status: Self.status(of: r, key: key), opening: r.opening, record: r))
            }
        }
        for id in KeyStore.enumeratedReleaseIDs(count: enumerate) {
            let key = try ReleaseKey.derive(owner: owner, releaseID: id)
            guard seen.insert(key.id).inserted else { continue }
            out.append(KeyCandidate(key: key, releaseId: id, origin: .enumerated,
                                    status: KeyCommitmentStatus(committed: false, releaseId: id,
                                                                note: "release \(id) (a default release id tried without a key store record): " + DetectionKey.caution),
                                    opening: nil, record: nil))
        }
        return KeyCandidates(candidates: out, notes: notes)
    }

    /// A stored release's commitment status: committed when its opening opens the manifest embed wrote, unchanged
    /// since (its SHA-256 as recorded).
    static func status(of r: KeyStoreRecord, key: WatermarkKey) -> KeyCommitmentStatus {
        let id = r.releaseId ?? ""
        guard let opening = r.opening else {
            return KeyCommitmentStatus(committed: false, releaseId: id, commitment: r.commitment, note: "release \(id) (key store, no opening recorded): " + DetectionKey.caution)
        }
        if let loaded = try? EmbedManifest.load(path: r.manifestPath), loaded.sha256Hex == r.manifestSHA256,
           (try? opening.check(against: loaded.manifest, path: r.manifestPath)) != nil {
            return KeyCommitmentStatus(committed: true, releaseId: id, commitment: opening.commitment,
                note: "committed: the key store's opening opens commitment \(opening.commitment.prefix(16))… of release \(id) published in \(r.manifestPath) (a timestamp of that manifest proves when)")
        }
        return KeyCommitmentStatus(committed: false, releaseId: id, commitment: opening.commitment,
            note: "release \(id) (key store): its manifest \(r.manifestPath) is missing or changed since embed, so the commitment cannot be shown as published; " + DetectionKey.caution)
    }
}

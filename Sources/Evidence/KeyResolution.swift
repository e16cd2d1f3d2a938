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

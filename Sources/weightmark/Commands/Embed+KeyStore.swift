import Evidence
import Foundation
import TensorIO
import Watermarking

extension Embed {
    /// The release id this run marks for: --release, none with --no-release, else the key store's next default id
    /// (`r1`, `r2`, …, taken atomically, so the owner key alone can enumerate it later).
    func releaseIDForRun() throws -> String? {
        if noRelease { return nil }
        if let release { return release }
        return try KeyStore(keyPath: key).reserveDefaultReleaseID()
    }

    /// What one marked release leaves behind: the manifest (with the release's commitment), the opening (0600) and the
    /// key store record. `embed` and `demo` both finish a release through this.
    struct ReleaseFiles {
        var keyPath: String
        var manifestPath: String
        var openingPath: String
        var output: String
        var input: String
        var overwrite: Bool
    }

    /// Commits to the release (when there is one), writes the manifest and the opening, and records the run in the
    /// owner's key store (docs/FORMAT.md, "The owner's key store").
    /// - Returns: the opening (nil without a release) and the key store record's path.
    static func finishRelease(_ manifest: inout EmbedManifest, owner: WatermarkKey, markKey: WatermarkKey, releaseID: String?,
                              originalTensorsSHA256: [UInt8]?, files: ReleaseFiles) throws -> (opening: CommitmentOpening?, record: String) {
        var opening: CommitmentOpening?
        if let releaseID, let digest = originalTensorsSHA256 {
            // The commitment binds the parameters exactly as the manifest records them.
            let o = CommitmentOpening(releaseId: releaseID, owner: owner, release: markKey, nonce: ReleaseCommitment.freshNonce(),
                                      originalTensorsSHA256: digest, parameters: CommitmentParameters(manifest: manifest))
            manifest.release = ReleaseRecord(id: releaseID, keyId: markKey.id, ownerKeyId: owner.id, commitment: o.commitment)
            try o.save(to: files.openingPath, overwrite: files.overwrite)
            opening = o
        }
        try Console.writeJSON(manifest, to: files.manifestPath, overwrite: files.overwrite)
        let record = try recordInKeyStore(keyPath: files.keyPath, owner: owner, markKey: markKey, releaseID: releaseID, opening: opening,
                                          manifestPath: files.manifestPath, output: files.output, input: files.input,
                                          recipients: nil, format: manifest.formatVersion)
        return (opening, record)
    }

    /// Records a run in the owner's key store: release, subkey, commitment, opening and the manifest's hash.
    /// Failing to record is an error the user must see (the release would otherwise be findable only by enumeration).
    static func recordInKeyStore(keyPath: String, owner: WatermarkKey, markKey: WatermarkKey, releaseID: String?,
                                 opening: CommitmentOpening?, manifestPath: String, output: String, input: String,
                                 recipients: [String]?, format: Int) throws -> String {
        let loaded = try EmbedManifest.load(path: manifestPath)
        let record = KeyStoreRecord(releaseId: releaseID, markKeyId: markKey.id, ownerKeyId: owner.id, commitment: opening?.commitment,
                                    opening: opening, manifestPath: absolute(manifestPath), manifestSHA256: loaded.sha256Hex,
                                    output: absolute(output), input: absolute(input), recipients: recipients, markFormat: format)
        return try KeyStore(keyPath: keyPath).add(record)
    }

    static func absolute(_ path: String) -> String {
        URL(fileURLWithPath: path).standardizedFileURL.path
    }
}

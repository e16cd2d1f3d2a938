import ArgumentParser
import Evidence
import Foundation
import TensorIO
import Watermarking

/// `embed --recipient` / `--recipients`: fingerprinted personal copies.
extension Embed {
    func validateRecipients() throws {
        guard recipient != nil || recipients != nil else { return }
        if recipient != nil && recipients != nil {
            throw ValidationError("--recipient and --recipients exclude each other: one copy, or one copy per line of a file.")
        }
        if let recipient, recipient.trimmingCharacters(in: .whitespaces).isEmpty || recipient.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw ValidationError("--recipient must be printable text that is not empty (an e-mail address, a licence number).")
        }
        guard shaping == .uniform, format == .v2 else {
            throw ValidationError("personal copies need --shaping uniform and --format v2 (the defaults): the fingerprint is read against the uniform v2 owner mark.")
        }
        guard fingerprintShare > 0, fingerprintShare <= 0.8 else {
            throw ValidationError("--fingerprint-share must be in (0, 0.8] (default \(defaultFingerprintShare)); the owner mark keeps sqrt(1 − f²) of δ.")
        }
        if recipients != nil, manifest != nil {
            throw ValidationError("--manifest names one file; with --recipients every copy gets its own COPY.weightmark.json inside --out.")
        }
    }

    /// A file or folder name for a recipient's copy: the id with anything but letters, digits and `.@+-_` replaced.
    static func fileName(for id: String) -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.@+-_")
        var s = String(id.map { allowed.contains($0) ? $0 : "_" })
        if s.hasPrefix(".") { s = "_" + s.dropFirst() }
        return String(s.prefix(100))
    }

    struct RecipientIndexEntry: Codable { var recipient: String; var copy: String; var manifest: String }

    /// Copies written in one pass over the original: at most 8, and as many as keep the marked tensors that wait for
    /// the writers — up to `workers + 1` of every copy — within `passBudget` when the largest tensor waits; at least 1.
    static func copiesPerPass(largestTensorBytes: Int, workers: Int) -> Int {
        max(1, min(8, passBudget / max(1, (workers + 1) * largestTensorBytes)))
    }

    /// What the tensors waiting for a pass's writers may take (1.5 GiB), so a pass stays within the 2 GB an embed is
    /// allowed beyond mapped file pages.
    static let passBudget = 3 << 29

    func runPersonalCopies() async throws {
        let owner = try Console.loadKey(self.key, quiet: output.quiet)
        let source = try SafetensorsModel(path: model)
        let ids: [String]
        if let recipients { ids = try Tracer.recipients(fromFile: recipients) } else { ids = [recipient!] }
        let isFile = !(source.path as NSString).pathExtension.isEmpty && FileManager.default.fileExists(atPath: model)
            && !((try? FileManager.default.attributesOfItem(atPath: model)[.type] as? FileAttributeType) == .typeDirectory)
        // Where each copy goes.
        let outFolder = out.hasSuffix("/") ? String(out.dropLast()) : out
        var targets: [(id: String, path: String, manifest: String)] = []
        if recipients == nil {
            targets = [(ids[0], out, manifestPath)]
        } else {
            var used = Set<String>()
            for (k, id) in ids.enumerated() {
                var name = Self.fileName(for: id)
                if used.contains(name.lowercased()) { name += "-\(k + 1)" }
                used.insert(name.lowercased())
                let path = outFolder + "/" + name + (isFile ? ".safetensors" : "")
                targets.append((id, path, path + ".weightmark.json"))
            }
        }
        if !force {
            for t in targets { for p in [t.path, t.manifest] where FileManager.default.fileExists(atPath: p) { throw TensorIOError.outputExists(path: p) } }
            if recipients != nil, FileManager.default.fileExists(atPath: outFolder + "/recipients.json") {
                throw TensorIOError.outputExists(path: outFolder + "/recipients.json")
            }
            if !noRelease, FileManager.default.fileExists(atPath: openingPath) { throw TensorIOError.outputExists(path: openingPath) }
        }
        // Like plain embed: marked with a release subkey (the key store's next default id unless --release), unless --no-release.
        let releaseID = try releaseIDForRun()
        let key = try releaseID.map { try ReleaseKey.derive(owner: owner, releaseID: $0) } ?? owner
        let options = embedOptions
        let plan = try Embedder.plan(source, options: options)
        let otherWeights = source.auxiliaryWeightFiles
        if !otherWeights.isEmpty && !dropUnmarkedWeights {
            throw WatermarkError.unmarkedWeightFiles(path: source.path, files: otherWeights)
        }
        if recipients != nil { try FileManager.default.createDirectory(atPath: outFolder, withIntermediateDirectories: true) }
        let code = FingerprintCode(secret: key.secret)
        let marking = releaseID.map { "release \($0) (subkey \(key.id) of owner key \(owner.id))" } ?? "owner key \(key.id)"
        Console.note("\(ids.count) personal \(ids.count == 1 ? "copy" : "copies") of \(source.path), \(marking): owner mark δ_o = \(String(format: "%.2e", plan.delta * (1 - fingerprintShare * fingerprintShare).squareRoot())), fingerprint δ_f = \(String(format: "%.2e", plan.delta * fingerprintShare)) (total δ = \(String(format: "%.2e", plan.delta)))", quiet: output.quiet)
        // The commitment's hash of the original reads the input alongside the first pass (the same mapped pages).
        let originalDigest = releaseID == nil ? nil : Task.detached(priority: .utility) { TensorDigest.of(source) }
        var commitment: CommitmentOpening?
        var manifests: [EmbedManifest] = []
        var index: [RecipientIndexEntry] = []
        let start = Date()
        let perPass = Self.copiesPerPass(largestTensorBytes: plan.entries.map(\.tensor.descriptor.byteCount).max() ?? 0,
                                         workers: options.workers)
        for first in stride(from: 0, to: targets.count, by: perPass) {
            let pass = Array(targets[first..<min(targets.count, first + perPass)])
            let label = targets.count == 1 ? "embedding" : pass.count == 1 ? "copy \(first + 1)/\(targets.count)" : "copies \(first + 1)–\(first + pass.count)/\(targets.count)"
            let bar = ProgressBar(total: plan.entries.count * pass.count, label: label, enabled: !output.quiet)
            let tensors = plan.entries.count, total = targets.count, quiet = output.quiet || targets.count == 1
            let copies = pass.map { EmbedCopy(signal: RecipientFingerprint(code: code, recipient: $0.id, share: fingerprintShare), destination: $0.path) }
            var results = try Embedder.embed(source, key: key, options: options, plan: plan, copies: copies, overwrite: force) { c, tensor, done in
                bar.advance(detail: "\(pass[c].id): \(tensor.name)")
                if done == tensors, !quiet {
                    bar.finish() // clears the bar's line; it is drawn again on the next tensor
                    Console.note("copy \(first + c + 1)/\(total) marked: \(pass[c].id) → \(pass[c].path)")
                }
            }
            bar.finish()
            for (k, t) in pass.enumerated() {
                var result = results[k]
                result.created = ISO8601DateFormatter().string(from: Date())
                result.fingerprint = FingerprintRecord(recipient: t.id, share: fingerprintShare, delta: plan.delta)
                if let releaseID {
                    if commitment == nil {
                        // One commitment for the run: every copy is marked with the same subkey and parameters.
                        let opening = CommitmentOpening(releaseId: releaseID, owner: owner, release: key, nonce: ReleaseCommitment.freshNonce(),
                                                        originalTensorsSHA256: await originalDigest!.value, parameters: CommitmentParameters(manifest: result))
                        try opening.save(to: openingPath, overwrite: force)
                        commitment = opening
                    }
                    result.release = ReleaseRecord(id: releaseID, keyId: key.id, ownerKeyId: owner.id, commitment: commitment!.commitment)
                }
                try Console.writeJSON(result, to: t.manifest, overwrite: force)
                results[k] = result
                index.append(.init(recipient: t.id, copy: (t.path as NSString).lastPathComponent, manifest: (t.manifest as NSString).lastPathComponent))
            }
            manifests += results
        }
        if recipients != nil {
            try Console.writeJSON(index, to: outFolder + "/recipients.json", overwrite: force)
        }
        // One record for the run; it names the first copy's manifest (every copy's records the same release).
        let recordPath = try Self.recordInKeyStore(keyPath: self.key, owner: owner, markKey: key, releaseID: releaseID, opening: commitment,
                                                   manifestPath: targets[0].manifest, output: out, input: model, recipients: ids,
                                                   format: options.format.rawValue)
        let elapsed = Date().timeIntervalSince(start)
        if output.json {
            Console.out(try Console.json(manifests))
            return
        }
        Console.out("wrote \(targets.count) personal \(targets.count == 1 ? "copy" : "copies") in \(String(format: "%.1f", elapsed)) s (\(String(format: "%.2f", elapsed / Double(targets.count))) s per copy)")
        for t in targets.prefix(5) { Console.out("  \(t.id): \(t.path)") }
        if targets.count > 5 { Console.out("  … (\(outFolder)/recipients.json lists all)") }
        if let releaseID, let commitment {
            Console.out("  release:  \(releaseID) (subkey \(key.id) of owner key \(owner.id)); commitment \(commitment.commitment.prefix(16))… in every manifest")
            Console.out("  opening:  \(openingPath) (mode 0600; keep it with the key, never ship it)")
        }
        Console.out("  recorded: \(recordPath) (the key store; `trace --key \(self.key)` finds this run's release)")
        Console.out(String(format: "  key %@, owner mark δ_o = %.2e (expected blind Z ≈ %.1f, the same in every copy), fingerprint δ_f = %.2e",
                           key.id, plan.delta * (1 - fingerprintShare * fingerprintShare).squareRoot(), manifests.first?.expectedBlindZ ?? 0, plan.delta * fingerprintShare))
    }
}

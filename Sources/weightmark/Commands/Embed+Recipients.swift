import ArgumentParser
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
        if release != nil || opening != nil {
            throw ValidationError("personal copies are marked with the owner key itself (trace reads the owner key's code): drop --release/--opening.")
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

    func runPersonalCopies() throws {
        let key = try Console.loadKey(key, quiet: output.quiet)
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
            try FileManager.default.createDirectory(atPath: outFolder, withIntermediateDirectories: true)
        }
        if !force {
            for t in targets { for p in [t.path, t.manifest] where FileManager.default.fileExists(atPath: p) { throw TensorIOError.outputExists(path: p) } }
            if recipients != nil, FileManager.default.fileExists(atPath: outFolder + "/recipients.json") {
                throw TensorIOError.outputExists(path: outFolder + "/recipients.json")
            }
        }
        var options = embedOptions
        let plan = try Embedder.plan(source, options: options)
        let otherWeights = source.auxiliaryWeightFiles
        if !otherWeights.isEmpty && !dropUnmarkedWeights {
            throw WatermarkError.unmarkedWeightFiles(path: source.path, files: otherWeights)
        }
        let code = FingerprintCode(secret: key.secret)
        Console.note("\(ids.count) personal \(ids.count == 1 ? "copy" : "copies") of \(source.path), key \(key.id): owner mark δ_o = \(String(format: "%.2e", plan.delta * (1 - fingerprintShare * fingerprintShare).squareRoot())), fingerprint δ_f = \(String(format: "%.2e", plan.delta * fingerprintShare)) (total δ = \(String(format: "%.2e", plan.delta)))", quiet: output.quiet)
        var manifests: [EmbedManifest] = []
        var index: [RecipientIndexEntry] = []
        let start = Date()
        for t in targets {
            options.copySignal = RecipientFingerprint(code: code, recipient: t.id, share: fingerprintShare)
            let bar = ProgressBar(total: plan.entries.count, label: ids.count == 1 ? "embedding" : "copy \(index.count + 1)/\(ids.count)", enabled: !output.quiet)
            var result = try Embedder.embed(source, key: key, options: options, plan: plan, to: t.path, overwrite: force) { tensor, _ in
                bar.advance(detail: tensor.name)
            }
            bar.finish()
            result.created = ISO8601DateFormatter().string(from: Date())
            result.fingerprint = FingerprintRecord(recipient: t.id, share: fingerprintShare, delta: plan.delta)
            try Console.writeJSON(result, to: t.manifest, overwrite: force)
            manifests.append(result)
            index.append(.init(recipient: t.id, copy: (t.path as NSString).lastPathComponent, manifest: (t.manifest as NSString).lastPathComponent))
        }
        if recipients != nil {
            try Console.writeJSON(index, to: outFolder + "/recipients.json", overwrite: force)
        }
        let elapsed = Date().timeIntervalSince(start)
        if output.json {
            Console.out(try Console.json(manifests))
            return
        }
        Console.out("wrote \(targets.count) personal \(targets.count == 1 ? "copy" : "copies") in \(String(format: "%.1f", elapsed)) s (\(String(format: "%.2f", elapsed / Double(targets.count))) s per copy)")
        for t in targets.prefix(5) { Console.out("  \(t.id): \(t.path)") }
        if targets.count > 5 { Console.out("  … (\(outFolder)/recipients.json lists all)") }
        Console.out(String(format: "  key %@, owner mark δ_o = %.2e (expected blind Z ≈ %.1f, the same in every copy), fingerprint δ_f = %.2e",
                           key.id, plan.delta * (1 - fingerprintShare * fingerprintShare).squareRoot(), manifests.first?.expectedBlindZ ?? 0, plan.delta * fingerprintShare))
    }
}

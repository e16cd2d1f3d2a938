import ArgumentParser
import Evidence
import Foundation
import TensorIO
import Verification
import Watermarking

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The whole story on a real model, in seconds.",
        discussion: """
        `make demo` runs this on sentence-transformers/all-MiniLM-L6-v2, fetched from PyPI. \
        Everything is written under --workdir, which the demo owns: it is cleared on each run (only if it \
        was created by a previous demo).

        Example:
          weightmark demo --model .cache/minilm --workdir .cache/demo
        """
    )

    @Option(name: .long, help: ArgumentHelp("Model file or folder to mark.", valueName: "path"), completion: .file())
    var model: String

    @Option(name: .long, help: ArgumentHelp("Scratch folder for keys, the marked copy and reports.", valueName: "path"), completion: .directory)
    var workdir: String

    static let marker = ".weightmark-demo"

    func run() async throws {
        let fm = FileManager.default
        if fm.fileExists(atPath: workdir) {
            guard fm.fileExists(atPath: workdir + "/" + Self.marker) else {
                throw CLIError("\(workdir) exists and was not made by `weightmark demo`; choose an empty or new --workdir.")
            }
            try fm.removeItem(atPath: workdir)
        }
        try fm.createDirectory(atPath: workdir, withIntermediateDirectories: true)
        guard fm.createFile(atPath: workdir + "/" + Self.marker, contents: Data()) else {
            throw CLIError("cannot write in \(workdir); choose a writable --workdir.")
        }

        let original = try SafetensorsModel(path: model)
        Console.out("WeightMark demo: \(model) (\(Console.count(original.parameterCount)) parameters, \(original.tensors.count) tensors, \(Console.bytes(original.fileBytes)))")
        Console.out()

        let key = WatermarkKey.generate(), other = WatermarkKey.generate()
        let keyPath = "\(workdir)/owner.key", otherPath = "\(workdir)/someone-else.key"
        for (k, path) in [(key, keyPath), (other, otherPath)] { try k.save(to: path) }
        Console.out("1. keygen   \(keyPath)  (key id \(key.id); a second key stands in for someone else)")

        // Marked as `embed` marks by default: for the key store's next release (r1), recorded beside the key.
        let options = EmbedOptions()
        let start = Date()
        let plan = try Embedder.plan(original, options: options)
        let markedPath = "\(workdir)/marked"
        let releaseID = try KeyStore(keyPath: keyPath).reserveDefaultReleaseID()
        let releaseKey = try ReleaseKey.derive(owner: key, releaseID: releaseID)
        var manifest = try Embedder.embed(original, key: releaseKey, options: options, plan: plan, to: markedPath, overwrite: false)
        _ = try Embed.finishRelease(&manifest, owner: key, markKey: releaseKey, releaseID: releaseID,
                                    originalTensorsSHA256: TensorDigest.of(original),
                                    files: .init(keyPath: keyPath, manifestPath: markedPath + ".weightmark.json",
                                                 openingPath: markedPath + ".opening.json", output: markedPath, input: model, overwrite: false))
        let maxDelta = manifest.tensors.map(\.measuredDelta).max() ?? 0
        Console.out(String(format: "2. embed    %@ : release %@, %d weight matrices marked in %.1f s; each changed by ‖ΔW‖/‖W‖ = %.2f%% (cap 0.5%%)",
                           markedPath, releaseID, manifest.tensors.count, Date().timeIntervalSince(start), 100 * maxDelta))
        Console.out()

        // Detected as `detect --key owner.key` detects: the owner key alone, with every release of its store and the
        // default release ids, paid for in the bound.
        let marked = try SafetensorsModel(path: markedPath)
        let ownerKeys = try KeyCandidates.resolve(owner: key, ownerPath: keyPath, releaseID: nil, opening: nil, manifest: nil)
        let otherKeys = try KeyCandidates.resolve(owner: other, ownerPath: otherPath, releaseID: nil, opening: nil, manifest: nil)
        let checks: [(String, SafetensorsModel, SafetensorsModel?, KeyCandidates, Bool)] = [
            ("marked copy, blind (no original needed)", marked, nil, ownerKeys, true),
            ("marked copy, informed (against the original)", marked, original, ownerKeys, true),
            ("the original, unmarked", original, nil, ownerKeys, false),
            ("marked copy, someone else's key", marked, original, otherKeys, false),
        ]
        Console.out("3. detect --key owner.key (\(ownerKeys.count) keys tried: the owner key and every release in its key store; each paid for in the bound)")
        Console.out("   verdict          Z       false-positive probability ≤")
        var allAsExpected = true
        for (label, suspect, reference, keys, expected) in checks {
            let r = try Verifier.verify(suspect: suspect, reference: reference, keys: keys, options: VerificationOptions()).report
            allAsExpected = allAsExpected && r.detected == expected
            let verdict = r.detected ? "DETECTED    " : "not detected"
            let matched = r.detected ? (r.keySearch?.matched.releaseId).map { ", release \($0)" } ?? "" : ""
            Console.out("   \(verdict)  \(String(format: "%7.1f", r.combinedZ))   \(DetectionPrinter.pString(r.log10PValueBound).padding(toLength: 10, withPad: " ", startingAt: 0))  \(label)\(matched)")
        }
        Console.out()
        Console.out("Z is the combined correlation with the key's pattern; without the mark it behaves like a standard")
        Console.out("normal draw. The bound P(Z ≥ z) ≤ exp(−z²/2) holds whatever the weights are; the verdict needs ≤ 1e-6.")
        Console.out("Next: weightmark detect \(markedPath) --key \(keyPath) --reference \(model)")
        if !allAsExpected { throw ExitCode(ExitStatus.nothingFound) }
    }
}

import ArgumentParser
import Foundation
import Evidence
import TensorIO
import Watermarking

struct Embed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Watermark a model before release.",
        discussion: """
        Writes --out in the input's layout with a keyed mark in the selected matrices; the rest is copied \
        byte for byte. Marks with a release subkey (default: the store's next id r1, r2, …) recorded in \
        KEY.store/, so `detect --key KEY` alone finds it. Also writes a manifest (no secret; publish it) \
        and the opening (0600; keep it). --recipient(s): personal copies for `trace`. Details: docs/CLI.md#embed.

        Examples:
          weightmark embed model/ --key owner.key --out model-marked/
          weightmark embed model/ --key owner.key --recipients ids.txt --out copies/

        \(ExitStatus.simpleTable)
        """
    )

    @Argument(help: "Model to mark (.safetensors file or folder).", completion: .file())
    var model: String

    @Option(name: .long, help: ArgumentHelp("Key file from `weightmark keygen`.", valueName: "path"), completion: .file())
    var key: String

    @Option(name: .long, help: ArgumentHelp("Output file or folder (same layout as the input).", valueName: "path"), completion: .file())
    var out: String

    @Option(name: .long, help: ArgumentHelp("uniform (rank-32 update) or magnitude.", valueName: "shaping", visibility: .hidden))
    var shaping: WatermarkShaping = .uniform

    @Option(name: .long, help: ArgumentHelp("Relative distortion δ (overrides --target-z).", valueName: "δ"))
    var strength: Double?

    @Option(name: .long, help: ArgumentHelp("Expected blind Z of the marked model.", valueName: "Z"))
    var targetZ: Double = 20

    @Option(name: .long, help: ArgumentHelp("Manifest path (default: OUT.weightmark.json).", valueName: "path"), completion: .file())
    var manifest: String?

    @Option(name: .long, help: ArgumentHelp("Mark format: v2, or v1 for tools older than 0.2.", valueName: "format", visibility: .hidden))
    var format: MarkVersion = .v2

    @Option(name: .long, help: ArgumentHelp("Release id (default: the key store's next r1, r2, …).", valueName: "id"))
    var release: String?

    @Option(name: .long, help: ArgumentHelp("Opening path, mode 0600 (default: OUT.opening.json).", valueName: "path"), completion: .file())
    var opening: String?

    @Flag(name: .long, help: ArgumentHelp("Mark with the owner key itself, without a release subkey or commitment (tool 0.2's behaviour).", visibility: .hidden))
    var noRelease = false

    @Flag(name: .long, help: ArgumentHelp("Also record each input file's SHA-256 in the manifest (~+40% CPU time).", visibility: .hidden))
    var hashInput = false

    @Flag(name: .long, help: "Leave other weight files out (else refused).")
    var dropUnmarkedWeights = false

    @Flag(name: .long, help: "Replace --out and the manifest if they exist.")
    var force = false

    @Option(name: .long, help: ArgumentHelp("Write this recipient's personal copy.", valueName: "id"))
    var recipient: String?

    @Option(name: .long, help: ArgumentHelp("One personal copy per line of this file.", valueName: "path"), completion: .file())
    var recipients: String?

    @Option(name: .long, help: ArgumentHelp("Part f of δ given to the fingerprint (owner mark sqrt(1 − f²)·δ).", valueName: "f", visibility: .hidden))
    var fingerprintShare: Double = defaultFingerprintShare

    @OptionGroup var selection: SelectionOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        if let strength, !(strength > 0 && strength <= 0.1) {
            throw ValidationError("--strength must be in (0, 0.1]; typical values are 1e-3 to 5e-3.")
        }
        guard targetZ > 0, targetZ.isFinite else { throw ValidationError("--target-z must be positive (default 20).") }
        let o = out.hasSuffix("/") ? String(out.dropLast()) : out
        try OutputPaths.refuseOverlap(output: o, inputs: [model, key])
        try validateRecipients()
        try selection.validate(format: format)
        if noRelease, release != nil || opening != nil {
            throw ValidationError("--no-release marks with the owner key itself: drop --release/--opening, or drop --no-release.")
        }
        if let release, !ReleaseKey.isValid(releaseID: release) {
            throw ValidationError(EvidenceError.invalidReleaseID(release).description)
        }
        // The opening holds the release subkey: it must never ship inside the released model folder.
        let outFolder = URL(fileURLWithPath: o).standardizedFileURL.path + "/"
        if URL(fileURLWithPath: openingPath).standardizedFileURL.path.hasPrefix(outFolder) {
            throw ValidationError("--opening \(openingPath) is inside the output folder \(out), which is released: put it next to the manifest instead (default \(o).opening.json).")
        }
    }

    var openingPath: String {
        opening ?? ((out.hasSuffix("/") ? String(out.dropLast()) : out) + ".opening.json")
    }

    var manifestPath: String {
        manifest ?? ((out.hasSuffix("/") ? String(out.dropLast()) : out) + ".weightmark.json")
    }

    /// The options every copy is marked with, as the flags set them.
    var embedOptions: EmbedOptions {
        var options = EmbedOptions()
        options.shaping = shaping
        options.selection = selection.selection
        options.rank = selection.rank
        options.hashInputs = hashInput
        options.dropUnmarkedWeights = dropUnmarkedWeights
        options.format = format
        options.strength = strength.map { .relativeDistortion($0) } ?? .targetZ(targetZ)
        return options
    }

    func run() async throws {
        if recipient != nil || recipients != nil { return try await runPersonalCopies() }
        let owner = try Console.loadKey(self.key, quiet: output.quiet)
        let source = try SafetensorsModel(path: model)
        if !force {
            for p in [out, manifestPath] + (noRelease ? [] : [openingPath]) where FileManager.default.fileExists(atPath: p) {
                throw TensorIOError.outputExists(path: p)
            }
        } else if FileManager.default.fileExists(atPath: out), (try? EmbedManifest.load(path: manifestPath)) == nil {
            // --force replaces an earlier embed's output (its manifest says so), never anything else.
            throw CLIError("\(out) exists and is not an earlier output of embed (no readable manifest \(manifestPath)): --force only replaces what embed wrote. Remove it yourself or choose another --out.")
        }
        let releaseID = try releaseIDForRun()
        let key = try releaseID.map { try ReleaseKey.derive(owner: owner, releaseID: $0) } ?? owner
        let options = embedOptions
        let start = Date()
        let plan = try Embedder.plan(source, options: options)
        if plan.capped {
            Console.note(String(format: "warning: reaching --target-z %.1f needs δ = %.2e, above the fidelity cap (5e-3 measured after rounding); using δ = %.2e (expected blind Z %.1f). The model is small: informed detection (--reference) stays strong.", targetZ, plan.requestedDelta, plan.delta, plan.expectedBlindZ), quiet: false)
        }
        let otherWeights = source.auxiliaryWeightFiles
        if !otherWeights.isEmpty && !dropUnmarkedWeights {
            throw WatermarkError.unmarkedWeightFiles(path: source.path, files: otherWeights)
        }
        if !otherWeights.isEmpty {
            Console.note("leaving out of the output (they would ship unmarked): \(otherWeights.joined(separator: ", "))", quiet: output.quiet)
        }
        Console.note("marking \(plan.entries.count) of \(source.tensors.count) tensors of \(source.path) with key \(key.id), δ = \(String(format: "%.2e", plan.delta)), \(shaping.rawValue) shaping", quiet: output.quiet)
        let bar = ProgressBar(total: plan.entries.count, label: "embedding", enabled: !output.quiet)
        // The commitment's hash of the original reads the input alongside the embed (the same mapped pages).
        let originalDigest = releaseID == nil ? nil : Task.detached(priority: .utility) { TensorDigest.of(source) }
        var result = try Embedder.embed(source, key: key, options: options, plan: plan, to: out, overwrite: force) { t, _ in
            bar.advance(detail: t.name)
        }
        bar.finish()
        result.created = ISO8601DateFormatter().string(from: Date())
        let (_, recordPath) = try Self.finishRelease(&result, owner: owner, markKey: key, releaseID: releaseID,
                                                     originalTensorsSHA256: await originalDigest?.value,
                                                     files: ReleaseFiles(keyPath: self.key, manifestPath: manifestPath, openingPath: openingPath,
                                                                         output: out, input: model, overwrite: force))
        let elapsed = Date().timeIntervalSince(start)
        if output.json {
            Console.out(try Console.json(result))
            return
        }
        let maxDelta = result.tensors.map(\.measuredDelta).max() ?? 0
        Console.out("marked \(result.tensors.count) tensors (\(Console.count(plan.entries.reduce(0) { $0 + $1.tensor.descriptor.elementCount })) weights) in \(String(format: "%.1f", elapsed)) s")
        Console.out("  output:   \(out)")
        Console.out("  manifest: \(manifestPath)")
        if let releaseID {
            Console.out("  release:  \(releaseID) (subkey \(key.id) of owner key \(owner.id)); commitment \(result.release!.commitment.prefix(16))… in the manifest")
            Console.out("  opening:  \(openingPath) (mode 0600; keep it with the key, never ship it)")
        }
        Console.out("  recorded: \(recordPath) (the key store: `detect --key \(self.key)` tries every release recorded there)")
        Console.out(String(format: "  key %@, %@ shaping, δ = %.2e (max measured after rounding %.2e), expected blind Z ≈ %.1f",
                           key.id, shaping.rawValue, plan.delta, maxDelta, plan.expectedBlindZ))
    }
}

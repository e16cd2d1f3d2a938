import ArgumentParser
import Foundation
import Evidence
import TensorIO
import Watermarking

struct Embed: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Watermark a model before release.",
        discussion: """
        Adds a keyed spread-spectrum mark to the selected weight matrices and writes the model to --out in \
        the same layout (file, folder or sharded folder) and dtypes. Unselected tensors and __metadata__ \
        are copied byte for byte; other files of a model folder (config, tokenizer, subfolders such as \
        sentence-transformers' 1_Pooling/) are copied too and hashed in the manifest. A folder that also holds \
        weights in another file (pytorch_model.bin, tf_model.h5, a second .safetensors, …) is refused, since \
        that copy would ship unmarked: remove it, or pass --drop-unmarked-weights. The input is never \
        modified; --out is never replaced without --force.

        Selection (default): 2-D F32/F16/BF16/F64 tensors with at least 65,536 elements whose name does \
        not mention a norm or bias. --include/--exclude adjust it; detection must use the same flags.

        Strength: --target-z Z (default 20) picks the relative distortion δ = ‖ΔW‖/‖W‖ whose expected \
        blind Z on the unattacked model is Z; --strength δ sets it directly. δ is capped at 5e-3.

        A manifest (key id, δ, per-tensor β and measured distortion, SHA-256 of every output file) is \
        written to --manifest, by default OUT.weightmark.json next to the output. It holds no secret. \
        --hash-input also records the input files' SHA-256 (one more pass over the model).

        Releases: the model is marked with a subkey derived from the owner key and a release id (--release ID, \
        default the next free id r1, r2, … of the key store), so a dispute reveals only that release's subkey. The \
        manifest also gets a commitment to the subkey, a fresh nonce, the hash of the original's tensors and the \
        marking parameters; the opening that proves it goes to a separate file created with mode 0600 (--opening, \
        default OUT.opening.json, never inside the released folder). Every run is also recorded in the owner's key \
        store, KEY.store/ beside the key file (0700; records 0600, written atomically, never replaced): release id, \
        subkey id, commitment, opening, the manifest's path and hash. With it, `detect --key KEY` alone finds every \
        release; without it, the default ids r1…r16 are still tried. Publish or time-stamp the manifest \
        (`weightmark timestamp`). --no-release marks with the owner key itself, as tool 0.2 did.

        Personal copies (traitor tracing): --recipient ID writes the copy for one recipient (any printable \
        text: an e-mail, a licence number); --recipients FILE writes one copy per line into the folder --out \
        (named after the ids, with a recipients.json index). Every copy carries the owner mark, identical in all \
        copies, at sqrt(1 − f²)·δ, and a fingerprint derived from (key, id) alone at f·δ (f = \
        --fingerprint-share, default 0.4): the total distortion stays δ. `weightmark trace` names the recipients \
        a leaked copy came from, even when several of them mixed their copies. As for any embed, the copies are \
        marked with a release subkey (one release, commitment and opening for the whole run; every copy's \
        manifest records the release and its recipient); trace them with --release ID, --manifest or --opening. \
        --no-release marks them with the owner key itself, as earlier versions did. --recipients writes several copies per \
        pass over the original: each tensor's owner mark is derived once and every copy gets its fingerprint on top, \
        written side by side (the bytes are those --recipient writes for each id alone). A pass takes up to 8 copies, \
        fewer when 3 of the largest tensor per copy would pass 1.5 GiB (4 on a 2B model with a 131 MB embedding), \
        so memory stays bounded. Needs uniform shaping, format v2.

        Examples:
          weightmark embed model/ --key owner.key --out model-marked/
          weightmark embed model/ --key owner.key --out model-v2/ --release v2-2026-11
          weightmark embed model/ --key owner.key --recipient bob --out bob/
          weightmark embed model/ --key owner.key --recipients ids.txt --out copies/
        """
    )

    @Argument(help: "Model to mark: .safetensors file or Hugging Face folder.", completion: .file())
    var model: String

    @Option(name: .long, help: ArgumentHelp("Key file from `weightmark keygen`.", valueName: "path"), completion: .file())
    var key: String

    @Option(name: .long, help: ArgumentHelp("Output file or folder (same layout as the input).", valueName: "path"), completion: .file())
    var out: String

    @Option(name: .long, help: ArgumentHelp("uniform: rank-32 update. magnitude: rides on large weights, zeros stay zero.", valueName: "shaping"))
    var shaping: WatermarkShaping = .uniform

    @Option(name: .long, help: ArgumentHelp("Relative distortion δ per tensor (overrides --target-z).", valueName: "δ"))
    var strength: Double?

    @Option(name: .long, help: ArgumentHelp("Expected blind Z of the unattacked marked model.", valueName: "Z"))
    var targetZ: Double = 20

    @Option(name: .long, help: ArgumentHelp("Where to write the manifest (default: OUT.weightmark.json).", valueName: "path"), completion: .file())
    var manifest: String?

    @Option(name: .long, help: ArgumentHelp("Mark format: v2 (name-free, survives renames, transposes, resized vocabularies and tile-aligned slices) or v1 (name-keyed, for tools older than 0.2).", valueName: "format"))
    var format: MarkFormat = .v2

    @Option(name: .long, help: ArgumentHelp("Release id the subkey is derived from (letters, digits, . _ -; default: the key store's next r1, r2, …).", valueName: "id"))
    var release: String?

    @Option(name: .long, help: ArgumentHelp("Where to write the commitment's opening, mode 0600 (default: OUT.opening.json, next to the output).", valueName: "path"), completion: .file())
    var opening: String?

    @Flag(name: .long, help: "Mark with the owner key itself, without a release subkey or commitment (tool 0.2's behaviour).")
    var noRelease = false

    @Flag(name: .long, help: "Also record each input file's SHA-256 in the manifest (~+40% CPU time).")
    var hashInput = false

    @Flag(name: .long, help: "Leave the folder's other weight files (pytorch_model.bin, tf_model.h5, a second .safetensors, …) out of the output; without it embed refuses, since they would ship unmarked.")
    var dropUnmarkedWeights = false

    @Flag(name: .long, help: "Replace --out (and the manifest) if they exist.")
    var force = false

    @Option(name: .long, help: ArgumentHelp("Write the personal copy of this recipient (fingerprinted; see `weightmark trace`).", valueName: "id"))
    var recipient: String?

    @Option(name: .long, help: ArgumentHelp("One personal copy per line of this file, into the folder --out.", valueName: "path"), completion: .file())
    var recipients: String?

    @Option(name: .long, help: ArgumentHelp("Part f of δ given to the fingerprint (owner mark sqrt(1 − f²)·δ).", valueName: "f"))
    var fingerprintShare: Double = defaultFingerprintShare

    @OptionGroup var selection: SelectionOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        if let strength, !(strength > 0 && strength <= 0.1) {
            throw ValidationError("--strength must be in (0, 0.1]; typical values are 1e-3 to 5e-3.")
        }
        guard targetZ > 0, targetZ.isFinite else { throw ValidationError("--target-z must be positive (default 20).") }
        let o = out.hasSuffix("/") ? String(out.dropLast()) : out
        let m = model.hasSuffix("/") ? String(model.dropLast()) : model
        _ = m
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

import ArgumentParser
import Foundation
import Evidence
import TensorIO
import Watermarking

struct Detect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check whether a suspected copy carries your watermark.",
        discussion: """
        Blind (default): correlates the suspect's weights with your key's pattern; no original needed. \
        Informed (--reference ORIGINAL): correlates the difference from your unmarked original, which is \
        far stronger and survives heavier attacks. Exact zeros of the suspect where the original is non-zero \
        are treated as pruned (erased), not as evidence.

        The verdict uses a rigorous, distribution-free bound on the false-positive probability: \
        P(Z ≥ z) ≤ exp(−z²/2) (Hoeffding), whatever the weights look like. The mark is declared present \
        when that bound is ≤ --alpha (default 1e-6). The Gaussian estimate Φ̄(Z) is shown for reference.

        Formats are recognized from the bytes, not the extension: safetensors files and Hugging Face folders, \
        GGUF (every ggml type llama.cpp writes is dequantized; names mapped back, rotary q/k order undone), \
        PyTorch zip checkpoints (.bin/.pt/.pth, read by a restricted unpickler that never executes code; Meta \
        consolidated.NN.pth folders are merged), and NumPy .npy/.npz. Suspect and reference may differ in format.

        Marks of format v2 (the default of `embed`) depend on the key and tile positions only, never on names: \
        renamed, re-sharded, transposed, fused (qkv_proj, gate_up_proj, query_key_value), sliced on tile \
        boundaries or vocabulary-resized copies are detected, and the report says how each matrix was read. \
        --format auto (default) also looks for format v1 and doubles the bound for that search.

        Keys: a model marked for a release (embed's default) is detected with --key and --release ID (or \
        --manifest, which records the id), or with --opening (the release's opening, which reveals only that \
        release's subkey). The report says whether the key was committed: only an opening that opens the \
        commitment of --manifest proves the key was fixed at release; otherwise a caution says that a key search \
        could produce the score. Models marked with the owner key itself (--no-release, tool 0.2) need --key only.

        Exit codes: 0 detected, 1 not detected, 2 error.

        Examples:
          weightmark detect leaked.safetensors --key owner.key --release v2-2026-11
          weightmark detect leaked.safetensors --opening model-v2.opening.json --manifest model-v2.weightmark.json
          weightmark detect leaked-Q4_K.gguf --key owner.key --reference original/
          weightmark detect leaked/ --key owner.key --reference original/ --json > report.json
        """
    )

    @Argument(help: "Suspected copy: safetensors file or folder, GGUF, PyTorch checkpoint (file or Meta folder), or .npy/.npz.", completion: .file())
    var suspect: String

    @Option(name: .long, help: ArgumentHelp("Key file from `weightmark keygen` (the owner key).", valueName: "path"), completion: .file())
    var key: String?

    @Option(name: .long, help: ArgumentHelp("Release id the model was marked for (embed prints it; the manifest records it).", valueName: "id"))
    var release: String?

    @Option(name: .long, help: ArgumentHelp("Opening written by embed: detects with its release subkey and, with --manifest, proves the key was committed.", valueName: "path"), completion: .file())
    var opening: String?

    @Option(name: .long, help: ArgumentHelp("The unmarked original, for informed detection.", valueName: "path"), completion: .file())
    var reference: String?

    @Option(name: .long, help: ArgumentHelp("Embed manifest: lists the tensors expected, so missing or reshaped ones are reported.", valueName: "path"), completion: .file())
    var manifest: String?

    @Option(name: .long, help: ArgumentHelp("Largest accepted false-positive bound.", valueName: "p"))
    var alpha: Double = 1e-6

    @Option(name: .long, help: ArgumentHelp("Also write the JSON report to this file (never replaced without --force).", valueName: "path"), completion: .file())
    var report: String?

    @Option(name: .long, help: ArgumentHelp("Check only part i of N of the selected tensors (0 ≤ i < N), to spread one model over N runs; merge the N reports with `weightmark combine`.", valueName: "i/N"))
    var part: String?

    @Option(name: .long, help: ArgumentHelp("Mark formats to look for: auto (v1 and v2; the bound pays a factor 2), v1 or v2.", valueName: "format"))
    var format: DetectFormat = .auto

    @Flag(name: .long, help: "Replace the --report file if it exists.")
    var force = false

    @Option(name: .long, help: ArgumentHelp("How many of the strongest tensors to list.", valueName: "n"))
    var top: Int = 5

    @OptionGroup var selection: SelectionOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard key != nil || opening != nil else {
            throw ValidationError("give --key OWNER.key (with --release ID for a model marked for a release) or --opening FILE.")
        }
        guard alpha > 0 && alpha < 1 else { throw ValidationError("--alpha must be in (0, 1); the default 1e-6 suits legal evidence.") }
        if let part, ReportPart(parsing: part) == nil {
            throw ValidationError("--part must be i/N with 0 ≤ i < N, e.g. 0/4 … 3/4 for four runs.")
        }
        if part != nil, format != .v1 {
            throw ValidationError("--part needs --format v1: format v2 pools matrices by tile position, so its parts cannot be merged exactly yet. Check a v2-marked model in one run.")
        }
    }

    func run() async throws {
        let owner = try self.key.map { try Console.loadKey($0, quiet: output.quiet) }
        let openingFile = try opening.map { (try CommitmentOpening.load(from: $0), path: $0) }
        if let report, !force, FileManager.default.fileExists(atPath: report) { throw TensorIOError.outputExists(path: report) }
        let suspectModel = try openTensorSource(path: suspect)
        let referenceModel = try reference.map { try openTensorSource(path: $0) }
        var options = DetectOptions()
        options.selection = selection.selection
        options.rank = selection.rank
        options.alpha = alpha
        options.part = part.flatMap(ReportPart.init(parsing:))
        options.format = format
        var expected: [(name: String, shape: [Int])] = []
        let embedManifest = try manifest.map { manifest in
            guard let data = FileManager.default.contents(atPath: manifest),
                  let m = try? JSONDecoder().decode(EmbedManifest.self, from: data) else {
                throw CLIError("\(manifest): not a WeightMark embed manifest (the .weightmark.json written by `embed`).")
            }
            return m
        }
        let resolved = try DetectionKey.resolve(owner: owner, releaseID: release, opening: openingFile,
                                                manifest: embedManifest.map { ($0, path: manifest!) })
        let key = resolved.key
        if let manifest, let m = embedManifest {
            if m.keyId != key.id {
                Console.note("warning: \(manifest) was made with key \(m.keyId), but --key is \(key.id).", quiet: output.quiet)
            }
            expected = m.tensors.map { ($0.name, $0.shape) }
            // The manifest says how the model was marked; flags that say otherwise are a mistake, not a choice.
            if selection.isCustomized, selection.selection != m.selection || selection.rank != m.rank {
                throw ValidationError("\(manifest) records the selection and rank used at embed time (\(m.selection.summary), rank \(m.rank)); --include/--exclude/--rank disagree. Drop them, or drop --manifest.")
            }
            if m.selection != options.selection || m.rank != options.rank {
                Console.note("using the selection and rank recorded in \(manifest): \(m.selection.summary), rank \(m.rank)", quiet: output.quiet)
            }
            options.selection = m.selection
            options.rank = m.rank
        }
        let bar = ProgressBar(total: 1, label: "detecting", enabled: !output.quiet)
        var result = try Detector.detect(suspect: suspectModel, reference: referenceModel, key: key, options: options,
                                         expected: expected) { name, i, total in
            if i == 0 { bar.reset(total: total) }
            if i > 0 { bar.advance(detail: name) }
        }
        bar.finish()
        result.keyCommitment = resolved.status
        if let report {
            try Console.writeJSON(result, to: report, overwrite: force)
        }
        if output.json {
            Console.out(try Console.json(result))
        } else {
            DetectionPrinter.print(result, top: top)
        }
        if !result.detected {
            if release == nil && opening == nil && manifest == nil {
                Console.note("hint: a model marked for a release (embed's default) carries that release's subkey, not the owner key: pass --release ID (the manifest's release.id) or --opening FILE.", quiet: output.quiet)
            }
            throw ExitCode(1)
        }
    }
}

/// The human rendering of a detection report.
enum DetectionPrinter {
    static func print(_ r: DetectionReport, top: Int) {
        let verdict = r.detected ? "WATERMARK DETECTED" : "not detected"
        Console.out("\(verdict): \(r.suspect) (key \(r.keyId), format v\(r.formatVersion), \(r.mode.rawValue)\(r.reference.map { " against \($0)" } ?? ""))")
        Console.out(String(format: "  combined Z = %.2f over %d tensors", r.combinedZ, r.tensors.count)
                    + (r.part.map { " (part \($0) of the \(r.selectedTensors?.count ?? 0) selected; merge all parts with `weightmark combine`)" } ?? ""))
        if r.partialCoverage == true {
            Console.out("  PARTIAL COVERAGE: these reports do not cover every selected tensor (accepted with --allow-partial); the bound holds only if the tensors shown were not chosen after seeing their scores")
        }
        Console.out("  false-positive probability ≤ \(pString(r.log10PValueBound)) (rigorous bound), ≈ \(pString(r.log10PValueGaussian)) (Gaussian estimate); threshold \(String(format: "%.0e", r.alpha))")
        if let c = r.keyCommitment {
            Console.out(c.committed ? "  key committed: \(c.note)" : "  CAUTION: \(c.note)")
        }
        if (r.formatsTried ?? 1) > 1 {
            Console.out("  searched formats v1 and v2: both probabilities include the factor \(r.formatsTried!) for that search")
        }
        if let t = r.tileStatistics {
            Console.out("  v2 statistic over \(t.scoredPositions) tile positions; \(t.pilotPositions) pilot positions chose among up to \(t.hypothesesPerGroup) re-packaging hypotheses per matrix shape (free in the bound)")
            let repackaged = Dictionary(grouping: r.tensors.filter { ($0.hypothesis ?? "as stored") != "as stored" }, by: { $0.hypothesis! })
            for (h, ts) in repackaged.sorted(by: { $0.key < $1.key }) {
                Console.out("  read as \(h): \(ts.count) matrices (\(ts.prefix(3).map(\.name).joined(separator: ", "))\(ts.count > 3 ? ", …" : ""))")
            }
        }
        if !r.skipped.isEmpty {
            Console.out("  skipped \(r.skipped.count) tensors:")
            for s in r.skipped.prefix(10) { Console.out("    \(s.name): \(s.reason)") }
        }
        if top > 0 && !r.tensors.isEmpty {
            let strongest = r.tensors.sorted { $0.z > $1.z }.prefix(top)
            Console.out("  strongest tensors:")
            let table = Console.table(["tensor", "shape", "z", "⟨Y,S⟩", "‖Y‖"], strongest.map {
                [$0.name, "\($0.shape[0])×\($0.shape[1])", String(format: "%.2f", $0.z),
                 String(format: "%.3g", $0.correlation), String(format: "%.3g", $0.norm)]
            }, rightAligned: [2, 3, 4])
            Console.out(table.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n"))
        }
    }

    /// "1e-87" style from a log10 value.
    static func pString(_ log10p: Double) -> String {
        if log10p > -3 { return String(format: "%.3g", pow(10, log10p)) }
        let e = floor(log10p)
        return String(format: "%.1fe%d", pow(10, log10p - e), Int(e))
    }
}

import Alignment
import ArgumentParser
import Foundation
import Lineage
import Evidence
import TensorIO
import Verification
import Watermarking

struct Detect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check whether a suspected copy carries your watermark.",
        discussion: """
        Blind (default) correlates the suspect with your key's pattern; informed (--reference) aligns it to \
        your original (key-free) and correlates the difference: far stronger. Detected when the bound \
        exp(−z²/2) × keys and formats tried is ≤ --alpha, whatever the weights. Any format read, by content. \
        Details: docs/CLI.md#detect.

        Examples:
          weightmark detect leaked.gguf --key owner.key
          weightmark detect leaked/ --key owner.key --reference original/ --json

        Exit codes: 0 detected, 1 not detected, 2 error, 3 inconclusive (unread parts).
        """
    )

    @Argument(help: "Suspected copy (file or folder, any format read).", completion: .file())
    var suspect: String

    @OptionGroup var keys: KeyOptions

    @Option(name: .long, help: ArgumentHelp("The unmarked original: informed detection.", valueName: "path"), completion: .file())
    var reference: String?

    @Option(name: .long, help: ArgumentHelp("False-positive bound to accept.", valueName: "p"))
    var alpha: Double = 1e-6

    @Option(name: .long, help: ArgumentHelp("Also write the JSON report to this file.", valueName: "path"), completion: .file())
    var report: String?

    @Option(name: .long, help: ArgumentHelp("Check only part i of N of the selected tensors (0 ≤ i < N), to spread one model over N runs; merge the N reports with `weightmark combine`.", valueName: "i/N", visibility: .hidden))
    var part: String?

    @Option(name: .long, help: ArgumentHelp("Formats to look for (auto pays for both).", valueName: "format"))
    var format: MarkVersionSearch = .auto

    @Flag(name: .long, help: "With --reference: do not align first.")
    var noAlign = false

    @Flag(name: .long, help: "With --reference: skip the lineage test.")
    var noLineage = false

    @Option(name: .long, help: ArgumentHelp("Attention heads for alignment (default: config.json next to the reference).", valueName: "n", visibility: .hidden))
    var heads: Int?

    @Flag(name: .long, help: "Replace the --report file if it exists.")
    var force = false

    @Option(name: .long, help: ArgumentHelp("How many of the strongest tensors to list.", valueName: "n", visibility: .hidden))
    var top: Int = 5

    @OptionGroup var selection: SelectionOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard !keys.isEmpty else {
            throw ValidationError("give --key OWNER.key (it finds every release recorded in OWNER.key.store) or --opening FILE.")
        }
        guard alpha > 0 && alpha < 1 else { throw ValidationError("--alpha must be in (0, 1); the default 1e-6 suits legal evidence.") }
        if let part, ReportPart(parsing: part) == nil {
            throw ValidationError("--part must be i/N with 0 ≤ i < N, e.g. 0/4 … 3/4 for four runs.")
        }
        if part != nil, format != .v1 {
            throw ValidationError("--part needs --format v1: format v2 pools matrices by tile position, so its parts cannot be merged exactly yet. Check a v2-marked model in one run.")
        }
        try selection.validate(format: format)
    }

    func run() async throws {
        if let report, !force, FileManager.default.fileExists(atPath: report) { throw TensorIOError.outputExists(path: report) }
        // The files first: an unreadable suspect is the error to report, before any note about keys.
        let suspectModel = try openTensorSource(path: suspect)
        let referenceModel = try reference.map { try openTensorSource(path: $0) }
        let manifest = try keys.loadManifest()
        let candidates = try keys.resolve(manifest: manifest, quiet: output.quiet)
        var options = VerificationOptions()
        options.detect.selection = selection.selection
        options.detect.rank = selection.rank
        options.detect.alpha = alpha
        options.detect.part = part.flatMap(ReportPart.init(parsing:))
        options.detect.format = format
        options.align = !noAlign
        if let reference { options.alignment = VerificationOptions.alignment(reference: reference, heads: heads) }
        if let loaded = manifest {
            let m = loaded.manifest
            options.expected = m.tensors.map { SelectedTensor(name: $0.name, shape: $0.shape) }
            // The manifest says how the model was marked; flags that say otherwise are a mistake, not a choice.
            if selection.isCustomized, selection.selection != m.selection || selection.rank != m.rank {
                throw ValidationError("\(loaded.path) records the selection and rank used at embed time (\(m.selection.summary), rank \(m.rank)); --include/--exclude/--rank disagree. Drop them, or drop --manifest.")
            }
            if m.selection != options.detect.selection || m.rank != options.detect.rank {
                Console.note("using the selection and rank recorded in \(loaded.path): \(m.selection.summary), rank \(m.rank)", quiet: output.quiet)
            }
            options.detect.selection = m.selection
            options.detect.rank = m.rank
        }
        let bar = ProgressBar(total: 1, label: candidates.count > 1 ? "detecting (\(candidates.count) keys)" : "detecting", enabled: !output.quiet)
        let verdict = try Verifier.verify(suspect: suspectModel, reference: referenceModel, keys: candidates, options: options) { k, _, name, i, total in
            if i == 0 { bar.reset(total: total) }
            if i > 0 { bar.advance(detail: candidates.count > 1 ? "key \(k + 1): \(name)" : name) }
        }
        bar.finish()
        let result = verdict.report.sealed()
        // A second, independent line of evidence: the passive lineage test, which reads no key and no mark.
        var lineage: LineageReport?
        if let referenceModel, !noLineage {
            do {
                Console.note("lineage test (no mark, no key) against \(reference!)", quiet: output.quiet)
                lineage = try LineageTest.run(suspect: suspectModel, reference: referenceModel, config: ModelConfig.load(near: reference!))
            } catch {
                Console.note("lineage test not run: \(error)", quiet: output.quiet)
            }
        }
        let full = AlignedDetectionReport(report: result, alignment: verdict.alignment, lineage: lineage)
        if let report {
            try Console.writeJSON(full, to: report, overwrite: force)
        }
        if output.json {
            Console.out(try Console.json(full))
        } else {
            DetectionPrinter.print(result, top: top)
            if let alignment = verdict.alignment, alignment.changed {
                Console.out("  aligned to the reference first (key-free; the bound is unchanged):")
                for line in alignment.summaryLines { Console.out("    " + line) }
            }
            if let lineage {
                Console.out("  lineage without the mark (independent evidence, `weightmark lineage`):")
                for line in LineageText.lines(lineage) { Console.out("    " + line) }
            }
        }
        if result.inconclusive == true { throw ExitCode(ExitStatus.inconclusive) }
        if !result.detected { throw ExitCode(ExitStatus.nothingFound) }
    }
}

/// The detection report with the `alignment` block next to its fields (the same JSON object `combine` reads).
struct AlignedDetectionReport: Encodable {
    var report: DetectionReport
    var alignment: AlignmentReport?
    var lineage: LineageReport?
    enum Keys: String, CodingKey { case alignment, lineage }
    func encode(to encoder: any Encoder) throws {
        try report.encode(to: encoder)
        var c = encoder.container(keyedBy: Keys.self)
        try c.encodeIfPresent(alignment, forKey: .alignment)
        try c.encodeIfPresent(lineage, forKey: .lineage)
    }
}

/// The human rendering of a detection report.
enum DetectionPrinter {
    static func print(_ r: DetectionReport, top: Int) {
        let verdict = r.detected ? "WATERMARK DETECTED" : (r.inconclusive == true ? "INCONCLUSIVE" : "not detected")
        Console.out("\(verdict): \(r.suspect) (key \(r.keyId), format v\(r.formatVersion), \(r.mode.rawValue)\(r.reference.map { " against \($0)" } ?? ""))")
        Console.out(String(format: "  combined Z = %.2f over %d tensors", r.combinedZ, r.tensors.count)
                    + (r.part.map { " (part \($0) of the \(r.selectedTensors?.count ?? 0) selected; merge all parts with `weightmark combine`)" } ?? ""))
        if let c = r.coverage, c.unreadTensors > 0 {
            let lead = r.inconclusive == true ? "  INCONCLUSIVE: not detected in what was read, but " : "  read coverage: "
            Console.out(lead + c.summary + (r.inconclusive == true ? "; more than \(Int(ReadCoverage.inconclusiveShare * 100))% unread, so no negative verdict. To get it read: \(ReadCoverage.advice)" : ""))
        }
        if r.partialCoverage == true {
            Console.out("  PARTIAL COVERAGE: these reports do not cover every selected tensor (accepted with --allow-partial); the bound holds only if the tensors shown were not chosen after seeing their scores")
        }
        Console.out("  false-positive probability ≤ \(pString(r.log10PValueBound)) (rigorous bound), ≈ \(pString(r.log10PValueGaussian)) (Gaussian estimate); threshold \(String(format: "%.0e", r.alpha))")
        if let c = r.keyCommitment {
            Console.out(c.committed ? "  key " + c.note : "  CAUTION: \(c.note)")
        }
        if let n = r.combinedFromReports {
            Console.out("  combined from \(n) reports: unverified inputs (anyone can edit a report and recompute its hash); an evidence bundle (`weightmark evidence`) is the verified form")
        }
        if let search = r.keySearch {
            let matched = search.matched.releaseId.map { "release \($0)" } ?? "the owner key itself"
            Console.out("  tried \(search.keysTried) keys (the owner key, its key store's releases, default release ids); both probabilities include the factor \(search.keysTried); best: \(matched) (key \(search.matched.keyId))")
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

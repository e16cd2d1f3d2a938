import ArgumentParser
import Evidence
import Foundation
import TensorIO
import Verification
import Watermarking

struct Trace: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Name the recipients a leaked personal copy came from.",
        discussion: """
        Reads the fingerprint of SUSPECT against the unmarked original (--reference) and scores every \
        recipient (--recipients, or those the key store recorded for the release the owner mark names). A \
        recipient is accused when a Chernoff bound on an innocent scoring that high, times every recipient \
        and key tried, is ≤ --alpha. Averaged, interleaved, voted or difference-erased collusions still name \
        a colluder. Renamed, re-packaged, permuted or rotated copies trace too. Details: docs/CLI.md#trace.

        Examples:
          weightmark trace leak.gguf --key owner.key --reference model/ --recipients ids.txt
          weightmark trace leak/ --key owner.key --reference model/ --json

        Exit codes: 0 someone accused, 1 no one accused, 2 error, 3 inconclusive.
        """
    )

    @Argument(help: "Suspected copy (any format `detect` reads).", completion: .file())
    var suspect: String

    @OptionGroup var keys: KeyOptions

    @Option(name: .long, help: ArgumentHelp("The unmarked original (required).", valueName: "path"), completion: .file())
    var reference: String

    @Option(name: .long, help: ArgumentHelp("Recipient ids, one per line (default: the store's).", valueName: "path"), completion: .file())
    var recipients: String?

    @Option(name: .long, help: ArgumentHelp("Largest accepted bound on accusing an innocent.", valueName: "p"))
    var alpha: Double = 1e-6

    @Option(name: .long, help: ArgumentHelp("How many unaccused recipients to rank.", valueName: "n", visibility: .hidden))
    var top: Int = 10

    @Flag(name: .long, help: "Do not align to the reference first.")
    var noAlign = false

    @Option(name: .long, help: ArgumentHelp("Attention heads for alignment (default: config.json next to the reference).", valueName: "n", visibility: .hidden))
    var heads: Int?

    @OptionGroup var selection: SelectionOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard !keys.isEmpty else {
            throw ValidationError("give --key OWNER.key (it finds every release recorded in OWNER.key.store) or --opening FILE.")
        }
        guard alpha > 0 && alpha < 1 else { throw ValidationError("--alpha must be in (0, 1); the default 1e-6 suits legal evidence.") }
        guard top >= 0 else { throw ValidationError("--top must be 0 or more.") }
    }

    func run() async throws {
        let suspectModel = try openTensorSource(path: suspect)
        let referenceModel = try openTensorSource(path: reference)
        let manifest = try keys.loadManifest()
        let candidates = try keys.resolve(manifest: manifest, quiet: output.quiet)
        var verification = VerificationOptions()
        verification.detect.selection = selection.selection
        verification.detect.format = .v2
        verification.align = !noAlign
        verification.alignment = VerificationOptions.alignment(reference: reference, heads: heads)
        // The one verification path: aligned once (key-free), then the owner mark names the release whose
        // fingerprint code is read; the accusation bound pays for every key searched.
        let bar = ProgressBar(total: 1, label: "reading", enabled: !output.quiet)
        let (scored, alignment) = try Verifier.aligned(suspect: suspectModel, reference: referenceModel, options: verification)
        var candidate = candidates.candidates[0]
        if candidates.count > 1 {
            let verdict = try Verifier.score(scored, reference: referenceModel, alignment: alignment, keys: candidates, options: verification)
            candidate = verdict.candidate
            Console.note("the owner mark names \(candidate.label) (informed Z \(String(format: "%.1f", verdict.report.combinedZ)) among \(candidates.count) keys); reading its fingerprints", quiet: output.quiet)
        }
        let ids: [String]
        if let recipients {
            ids = try Tracer.recipients(fromFile: recipients)
        } else if let stored = candidate.record?.recipients, !stored.isEmpty {
            ids = stored
            Console.note("scoring the \(ids.count) recipients the key store recorded for \(candidate.label)", quiet: output.quiet)
        } else {
            throw CLIError("give --recipients FILE: \(candidate.label) has no recipient list in the key store (\(candidates.count > 1 ? "it was not recorded there" : "no key store record was used")).")
        }
        var options = TraceOptions()
        options.selection = selection.selection
        options.alpha = alpha
        options.top = top
        options.keysTried = candidates.count
        var report = try Tracer.trace(suspect: scored, reference: referenceModel, key: candidate.key, recipients: ids, options: options) { name, i, total in
            if i == 1 { bar.reset(total: total) }
            bar.advance(detail: name)
        }
        bar.finish()
        report.keyCommitment = candidate.status
        if output.json {
            Console.out(try Console.json(report))
        } else {
            Self.print(report)
            if let alignment, alignment.changed {
                Console.out("  aligned to the reference first (key-free; the bound is unchanged):")
                for line in alignment.summaryLines { Console.out("    " + line) }
            }
        }
        if !report.anyAccused {
            if keys.release == nil && keys.opening == nil && keys.manifest == nil {
                Console.note("hint: from the key file alone, trace tries the releases its key store recorded and the default ids r1…rN; a release named at embed time and not in the store is not tried: pass --release ID (a copy's manifest's release.id), --manifest COPY.weightmark.json or --opening FILE.", quiet: output.quiet)
            }
            // No one accused from what was read; with too much unread that is "inconclusive", not "no one".
            let coverage = ReadCoverage.of(suspectModel, selection: options.selection)
            if coverage.isIncomplete {
                Console.note("INCONCLUSIVE: no one accused in what was read, but \(coverage.summary). To get it read: \(ReadCoverage.advice)", quiet: false)
                throw ExitCode(ExitStatus.inconclusive)
            }
            throw ExitCode(ExitStatus.nothingFound)
        }
    }

    static func print(_ r: TraceReport) {
        let verdict = r.anyAccused ? "ACCUSED \(r.accused.count) of \(r.recipients) recipients" : "no recipient accused (of \(r.recipients))"
        Console.out("\(verdict): \(r.suspect) against \(r.reference) (key \(r.keyId)\(r.keyCommitment?.releaseId.map { ", release \($0)" } ?? ""))")
        Console.out("  \(r.matrices.count) matrices read, \(r.positions) code positions; accused when the bound × \(r.recipients)\(r.keysTried.map { " recipients × \($0) keys" } ?? "") ≤ \(String(format: "%.0e", r.alpha)) (score ≥ \(String(format: "%.1f", r.thresholdScore)))")
        let rows = (r.accused.map { ($0, "accused") } + r.ranking.map { ($0, "") }).map { e, v in
            [v, e.recipient, String(format: "%.1f", e.score), DetectionPrinter.pString(e.log10Bound), DetectionPrinter.pString(e.log10FamilyBound)]
        }
        if !rows.isEmpty {
            let table = Console.table(["", "recipient", "score", "p (one)", "p (all listed)"], rows, rightAligned: [2, 3, 4])
            Console.out(table.split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
        }
        if let status = r.keyCommitment { Console.out("  key: \(status.note)") }
        if !r.skipped.isEmpty {
            Console.out("  skipped \(r.skipped.count) matrices:")
            for s in r.skipped.prefix(10) { Console.out("    \(s.name): \(s.reason)") }
        }
    }
}

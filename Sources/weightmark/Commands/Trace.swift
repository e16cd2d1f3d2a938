import ArgumentParser
import Evidence
import Foundation
import TensorIO
import Watermarking

struct Trace: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Name the recipients a leaked personal copy came from.",
        discussion: """
        Reads the fingerprint of SUSPECT against the unmarked original (--reference, required) and scores every \
        recipient listed in --recipients (one id per line, as given to `embed --recipients`; 10^6 ids take \
        about 16 CPU-seconds on MiniLM). Matrices are paired with the original by name or content, as `detect --reference` does, so \
        renamed, transposed and re-packaged copies (GGUF, PyTorch, NumPy) trace too.

        The score is the symmetric Tardos score with soft values; for each recipient the report gives a \
        Chernoff bound on the probability that an innocent recipient scores that high, exact given the observed \
        copy, multiplied by the number of listed recipients (Bonferroni). A recipient is accused when that \
        family-wise bound is ≤ --alpha (default 1e-6). Copies averaged, mixed matrix by matrix, voted or with \
        their differences erased by several colluders still name at least one of them (docs/FORMAT.md, \
        "Fingerprints (trace)"); the rest are ranked.

        Keys, as for `detect`: personal copies made for a release (embed's default) carry that release's subkey \
        and its fingerprint code: trace with --key and --release ID (or --manifest, any copy's manifest, which \
        records the id), or with --opening. With --opening and --manifest the report says the key was committed \
        before the dispute. Copies made with --no-release (and by earlier versions) need --key only (the last example).

        Exit codes: 0 someone accused, 1 no one accused, 2 error.

        Examples:
          weightmark trace leak.gguf --key k.key --release r1 --reference m/ --recipients ids.txt
          weightmark trace leak/ --key k.key --manifest bob.weightmark.json --reference m/ --recipients ids.txt --json
          weightmark trace leak/ --opening r1.opening.json --manifest bob.weightmark.json --reference m/ --recipients ids.txt
          weightmark trace old.gguf --key k.key --reference m/ --recipients ids.txt
        """
    )

    @Argument(help: "Suspected copy: any format `detect` reads.", completion: .file())
    var suspect: String

    @Option(name: .long, help: ArgumentHelp("Key file from `weightmark keygen` (the owner key).", valueName: "path"), completion: .file())
    var key: String?

    @Option(name: .long, help: ArgumentHelp("Release id the copies were made for (embed prints it; every copy's manifest records it).", valueName: "id"))
    var release: String?

    @Option(name: .long, help: ArgumentHelp("Opening written by embed: traces with its release subkey and, with --manifest, proves the key was committed.", valueName: "path"), completion: .file())
    var opening: String?

    @Option(name: .long, help: ArgumentHelp("A personal copy's manifest (COPY.weightmark.json): gives the release id and the commitment.", valueName: "path"), completion: .file())
    var manifest: String?

    @Option(name: .long, help: ArgumentHelp("The unmarked original the copies were made from (required).", valueName: "path"), completion: .file())
    var reference: String

    @Option(name: .long, help: ArgumentHelp("Recipients to score, one id per line.", valueName: "path"), completion: .file())
    var recipients: String

    @Option(name: .long, help: ArgumentHelp("Largest accepted family-wise bound on accusing an innocent.", valueName: "p"))
    var alpha: Double = 1e-6

    @Option(name: .long, help: ArgumentHelp("How many unaccused recipients to rank.", valueName: "n"))
    var top: Int = 10

    @OptionGroup var selection: SelectionOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard key != nil || opening != nil else {
            throw ValidationError("give --key OWNER.key (with --release ID for copies made for a release) or --opening FILE.")
        }
        guard alpha > 0 && alpha < 1 else { throw ValidationError("--alpha must be in (0, 1); the default 1e-6 suits legal evidence.") }
        guard top >= 0 else { throw ValidationError("--top must be 0 or more.") }
    }

    func run() async throws {
        let owner = try self.key.map { try Console.loadKey($0, quiet: output.quiet) }
        let openingFile = try opening.map { (try CommitmentOpening.load(from: $0), path: $0) }
        let copyManifest = try manifest.map { path in
            guard let data = FileManager.default.contents(atPath: path),
                  let m = try? JSONDecoder().decode(EmbedManifest.self, from: data) else {
                throw CLIError("\(path): not a WeightMark embed manifest (the COPY.weightmark.json written by `embed --recipient`).")
            }
            return (m, path: path)
        }
        let resolved = try DetectionKey.resolve(owner: owner, releaseID: release, opening: openingFile, manifest: copyManifest)
        let key = resolved.key
        let ids = try Tracer.recipients(fromFile: recipients)
        let suspectModel = try openTensorSource(path: suspect)
        let referenceModel = try openTensorSource(path: reference)
        var options = TraceOptions()
        options.selection = selection.selection
        options.alpha = alpha
        options.top = top
        let bar = ProgressBar(total: 1, label: "reading", enabled: !output.quiet)
        var report = try Tracer.trace(suspect: suspectModel, reference: referenceModel, key: key, recipients: ids, options: options) { name, i, total in
            if i == 1 { bar.reset(total: total) }
            bar.advance(detail: name)
        }
        bar.finish()
        report.keyCommitment = resolved.status
        if output.json {
            Console.out(try Console.json(report))
        } else {
            Self.print(report)
        }
        if !report.anyAccused {
            if release == nil && opening == nil && manifest == nil {
                Console.note("hint: copies made for a release (embed's default) carry that release's subkey and code, not the owner key's: pass --release ID (a copy's manifest's release.id), --manifest COPY.weightmark.json or --opening FILE.", quiet: output.quiet)
            }
            throw ExitCode(1)
        }
    }

    static func print(_ r: TraceReport) {
        let verdict = r.anyAccused ? "ACCUSED \(r.accused.count) of \(r.recipients) recipients" : "no recipient accused (of \(r.recipients))"
        Console.out("\(verdict): \(r.suspect) against \(r.reference) (key \(r.keyId)\(r.keyCommitment?.releaseId.map { ", release \($0)" } ?? ""))")
        Console.out("  \(r.matrices.count) matrices read, \(r.positions) code positions; accused when the bound × \(r.recipients) ≤ \(String(format: "%.0e", r.alpha)) (score ≥ \(String(format: "%.1f", r.thresholdScore)))")
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

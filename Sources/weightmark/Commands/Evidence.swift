import ArgumentParser
import Crypto
import Evidence
import Alignment
import Foundation
import Lineage
import TensorIO
import Verification
import Watermarking

struct EvidenceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evidence",
        abstract: "Write or verify a replayable evidence bundle.",
        discussion: """
        Write: detects the mark in SUSPECT as `detect` does and writes to --out a folder a third party can \
        check alone (manifest, opening, timestamp, report, hashes, lineage, README.txt). --verify BUNDLE: \
        re-checks every hash, the commitment and the timestamp, re-runs detection at your --alpha and \
        compares every statistic. Details: docs/CLI.md#evidence.

        Examples:
          weightmark evidence leaked/ --key owner.key --reference orig/ --out case/
          weightmark evidence --verify case/ --before 2026-12-01

        Exit codes: 0 detected / checks hold, 1 not detected / a check fails, 2 error.
        """
    )

    @Argument(help: ArgumentHelp("SUSPECT (write) or BUNDLE folder (with --verify).", valueName: "path"), completion: .file())
    var target: String

    @Flag(name: .long, help: "Verify the bundle <path> instead of writing one.")
    var verify = false

    @OptionGroup var keys: KeyOptions

    @Option(name: .long, help: ArgumentHelp("The unmarked original (--verify: where it is now).", valueName: "path"), completion: .file())
    var reference: String?

    @Option(name: .long, help: ArgumentHelp("RFC 3161 timestamp of the manifest.", valueName: "path"), completion: .file())
    var timestamp: String?

    @Option(name: .long, help: ArgumentHelp("The time-stamping authority's CA (PEM).", valueName: "path"), completion: .file())
    var ca: String?

    @Option(name: .long, help: ArgumentHelp("Where to write the bundle folder.", valueName: "path"), completion: .directory)
    var out: String?

    @Option(name: .long, help: ArgumentHelp("Mark formats to look for: auto, v1 or v2.", valueName: "format", visibility: .hidden))
    var format: MarkVersionSearch = .auto

    @Option(name: .long, help: ArgumentHelp("Largest accepted false-positive bound.", valueName: "p"))
    var alpha: Double = 1e-6

    @Flag(name: .long, help: ArgumentHelp("With --reference: do not align the suspect to it first.", visibility: .hidden))
    var noAlign = false

    @Option(name: .long, help: ArgumentHelp("Attention heads for alignment (default: config.json next to the reference).", valueName: "n", visibility: .hidden))
    var heads: Int?

    @Option(name: .long, help: ArgumentHelp("--verify: the timestamp must predate this date.", valueName: "date"))
    var before: String?

    @Option(name: .long, help: ArgumentHelp("--verify: where the suspect files are now.", valueName: "path"), completion: .file())
    var suspect: String?

    @Flag(name: .long, help: "Replace --out if it exists.")
    var force = false

    @OptionGroup var output: OutputOptions

    static func parseDate(_ text: String) -> Date? {
        let iso = ISO8601DateFormatter()
        if let d = iso.date(from: text) { return d }
        iso.formatOptions = [.withFullDate]
        return iso.date(from: text)
    }

    func validate() throws {
        if verify {
            if let before, Self.parseDate(before) == nil {
                throw ValidationError("--before must be a date such as 2026-12-01 or 2026-12-01T12:00:00Z.")
            }
            if !keys.isEmpty || keys.manifest != nil || timestamp != nil || out != nil {
                throw ValidationError("--verify reads everything from the bundle: drop --key/--opening/--manifest/--timestamp/--out.")
            }
            return
        }
        guard !keys.isEmpty else { throw ValidationError("give --key OWNER.key (its key store holds each release's opening and manifest) or --opening FILE with --manifest.") }
        guard out != nil else { throw ValidationError("give --out FOLDER, where to write the bundle.") }
        guard (timestamp == nil) == (ca == nil) else { throw ValidationError("--timestamp and --ca go together (the token and its authority's CA certificate).") }
        guard alpha > 0 && alpha < 1 else { throw ValidationError("--alpha must be in (0, 1).") }
        if before != nil || suspect != nil { throw ValidationError("--before and --suspect are for --verify.") }
    }

    func run() async throws {
        if verify { try await runVerify() } else { try await runWrite() }
    }

    func runWrite() async throws {
        try OutputPaths.refuseOverlap(output: out!, inputs: [target, reference ?? ""] + keys.key + [keys.opening ?? "", keys.manifest ?? ""])
        if !force, FileManager.default.fileExists(atPath: out!) { throw TensorIOError.outputExists(path: out!) }
        let suspectModel = try openTensorSource(path: target)
        let referenceModel = try reference.map { try openTensorSource(path: $0) }
        let givenManifest = try keys.loadManifest()
        let candidates = try keys.resolve(manifest: givenManifest, quiet: output.quiet)
        var timestampData: [UInt8]?
        if let timestamp { timestampData = try Timestamp.read(timestamp, what: "timestamp response") }
        var options = VerificationOptions()
        options.detect.alpha = alpha
        options.detect.format = format
        options.align = !noAlign
        if let reference { options.alignment = VerificationOptions.alignment(reference: reference, heads: heads) }
        if let m = givenManifest?.manifest {
            options.detect.selection = m.selection
            options.detect.rank = m.rank
            options.expected = m.tensors.map { SelectedTensor(name: $0.name, shape: $0.shape) }
        }
        // The one verification path: every key the user's material stands for, aligned as `detect --reference` aligns.
        Console.note("detecting with \(candidates.count) key\(candidates.count == 1 ? "" : "s")", quiet: output.quiet)
        let verdict = try Verifier.verify(suspect: suspectModel, reference: referenceModel, keys: candidates, options: options)
        let candidate = verdict.candidate
        guard let releaseId = candidate.releaseId else {
            throw CLIError("\(target): the best match is the owner key itself (a model marked with --no-release), and a bundle would have to reveal it. Bundles need a model marked for a release (embed's default).")
        }
        // The release's manifest: as given, or the one the key store recorded (unchanged since embed).
        let loaded: LoadedManifest
        if let givenManifest {
            loaded = givenManifest
        } else if let record = candidate.record {
            let m = try EmbedManifest.load(path: record.manifestPath)
            guard m.sha256Hex == record.manifestSHA256 else {
                throw CLIError("\(record.manifestPath): the manifest of release \(releaseId) changed since embed recorded it (SHA-256 \(m.sha256Hex.prefix(16))…, recorded \(record.manifestSHA256.prefix(16))…); pass the published manifest with --manifest.")
            }
            loaded = m
        } else {
            throw CLIError("release \(releaseId) matched (Z = \(String(format: "%.2f", verdict.report.combinedZ))), but no manifest is known for it: the key store has no record of it. Pass --manifest (and --opening) of that release.")
        }
        // The opening, checked against the manifest: only then is the key shown to be committed.
        let opening = candidate.opening
        var committed = false
        if let opening {
            try opening.check(against: loaded.manifest, path: loaded.path)
            committed = true
        }
        // The report: with --manifest the search already scored with the manifest's selection and tensors; a manifest
        // found in the key store only now, so the matched key is scored once more with it (bound paid for every key).
        var report = verdict.report
        if givenManifest == nil {
            var single = options
            single.detect.selection = loaded.manifest.selection
            single.detect.rank = loaded.manifest.rank
            single.expected = loaded.manifest.tensors.map { SelectedTensor(name: $0.name, shape: $0.shape) }
            report = try Verifier.score(verdict.scored, reference: referenceModel, alignment: verdict.alignment,
                                        keys: .single(candidate.key, status: candidate.status), options: single).report
            report = Verifier.paying(report, forKeys: candidates.count, releaseId: releaseId)
            if candidates.count > 1, let search = verdict.report.keySearch { report.keySearch = search }
        }
        report.keyCommitment = committed ? candidate.status : KeyCommitmentStatus(committed: false, releaseId: releaseId, commitment: loaded.manifest.release?.commitment,
                                                                                 note: "release \(releaseId): " + DetectionKey.caution)
        var referenceRecord: (path: String, tensorsSHA256: [UInt8])?
        if let reference {
            guard case .safetensors = try FileFormat.detect(path: reference) else {
                throw CLIError("\(reference): the reference of an evidence bundle must be the original as embed read it (safetensors), so its hash can be checked against the commitment.")
            }
            let digest = TensorDigest.of(try SafetensorsModel(path: reference), workers: ProcessInfo.processInfo.activeProcessorCount)
            if let o = opening, digest.map({ String(format: "%02x", $0) }).joined() != o.originalTensorsSHA256 {
                throw CLIError("\(reference): its tensors hash to \(digest.map { String(format: "%02x", $0) }.joined()), but release \(o.releaseId) committed to the original \(o.originalTensorsSHA256). Only the committed original can serve as the reference (a different one could be staged).")
            }
            referenceRecord = (reference, digest)
        }
        var stamp: (tokenPath: String, caPath: String, verification: TimeStampVerification)?
        if let timestamp, let ca, let timestampData {
            let v = try await TimeStampVerifier.verify(response: timestampData, path: timestamp,
                                                       fileDigest: Array(SHA256.hash(data: loaded.bytes)), requestNonce: nil,
                                                       trustRoots: try TimeStampVerifier.loadCertificates(path: ca))
            stamp = (timestamp, ca, v)
        }
        // The passive lineage test on the same pair: a second line of evidence that reads no key.
        var lineage: (claim: LineageClaim, reportJSON: [UInt8])?
        if let referenceModel, let reference {
            do {
                Console.note("lineage test (no mark, no key) against \(reference)", quiet: output.quiet)
                let l = try LineageTest.run(suspect: suspectModel, reference: referenceModel, config: ModelConfig.load(near: reference))
                lineage = (Self.claim(l), Array(try Console.json(l).utf8) + [0x0A])
            } catch {
                // Not every model has a layout the lineage test reads; the bundle then holds the mark's evidence only.
                Console.note("lineage test not in the bundle: \(error)", quiet: output.quiet)
            }
        }
        let index = try EvidenceBundle.write(.init(
            suspectPath: target, reference: referenceRecord, manifestPath: loaded.path, opening: opening,
            releaseKey: opening == nil ? candidate.key : nil, keyCommitted: committed, timestamp: stamp,
            report: report, settings: .init(format: format.rawValue, alpha: alpha, rank: loaded.manifest.rank, selection: loaded.manifest.selection,
                                            align: reference != nil && !noAlign, heads: heads, keysTried: candidates.count > 1 ? candidates.count : nil),
            lineage: lineage),
            to: out!, overwrite: force)
        if output.json {
            Console.out(try Console.json(index))
        } else {
            DetectionPrinter.print(report, top: 3)
            if let alignment = verdict.alignment, alignment.changed {
                Console.out("  aligned to the reference first (key-free; recorded in the bundle and replayed by --verify):")
                for line in alignment.summaryLines.prefix(4) { Console.out("    " + line) }
            }
            Console.out("wrote evidence bundle \(out!): \(index.suspect.files.count) suspect files hashed\(stamp.map { ", manifest time-stamped at \($0.verification.genTimeText)" } ?? ", no timestamp")")
            Console.out("  check it with: weightmark evidence --verify \(out!)")
        }
        if !report.detected { throw ExitCode(ExitStatus.nothingFound) }
    }

    func runVerify() async throws {
        let result = try await EvidenceBundle.verify(bundle: target, suspect: suspect, reference: reference,
                                                     before: before.flatMap(Self.parseDate), alpha: alpha, replay: Verifier.replay,
                                                     replayLineage: { s, r in Self.claim(try LineageTest.run(suspect: s, reference: r, config: ModelConfig.load(near: r.path))) })
        if output.json {
            struct Out: Encodable { var valid: Bool; var keyCommitted: Bool; var failed: [String]; var checks: [EvidenceCheck]; var timestamp: TimeStampVerification?; var replayed: DetectionReport?; var lineage: LineageClaim? }
            Console.out(try Console.json(Out(valid: result.valid, keyCommitted: result.keyCommitted, failed: result.failedFields,
                                             checks: result.checks, timestamp: result.timestamp, replayed: result.replayed,
                                             lineage: result.lineageReplayed)))
        } else {
            Self.printSummary(result, bundle: target)
        }
        if !result.valid { throw ExitCode(1) }
    }

    static func claim(_ l: LineageReport) -> LineageClaim {
        LineageClaim(verdict: l.verdict, log10PExact: l.log10PExact, log10PRobust: l.log10PRobust, pairsTried: l.pairsTried)
    }

    static func printSummary(_ v: EvidenceVerification, bundle: String) {
        Console.out(v.valid ? "EVIDENCE VALID: \(bundle)" : "EVIDENCE INVALID: \(bundle) — failed: \(v.failedFields.joined(separator: ", "))")
        if let r = v.replayed {
            Console.out("  In plain words:")
            Console.out(String(format: "  - Re-running the detection on the suspect files gives score Z = %.2f (the bundle claims %.2f).", r.combinedZ, v.claimed?.combinedZ ?? .nan))
            if let l = v.lineageReplayed {
                Console.out("  - Without the watermark, the lineage test (docs/LINEAGE.md) finds the suspect \(l.verdict) from the original: exact p ≤ \(LineageText.p(l.log10PExact)), permutation-robust p ≈ \(LineageText.p(l.log10PRobust)).")
            }
            Console.out("  - If the suspect did not carry this watermark, a score that high would occur with probability at most \(DetectionPrinter.pString(r.log10PValueBound)): \(r.detected ? "the watermark is DETECTED" : "that is NOT enough to call it detected") (threshold \(String(format: "%.0e", r.alpha))).")
        }
        Console.out(v.keyCommitted
                    ? "  - The key was fixed at release: the bundle opens the commitment published in the manifest, so it was not found by trying keys after the leak."
                    : "  - CAUTION: \(DetectionKey.caution).")
        if let t = v.timestamp {
            Console.out("  - A time-stamping authority (\(t.signer)) signed the manifest at \(t.genTimeText), so the commitment existed then.")
        }
        Console.out("  Checks:")
        for c in v.checks { Console.out("    \(c.passed ? "ok  " : "FAIL") \(c.field): \(c.detail)") }
    }
}

import ArgumentParser
import Crypto
import Evidence
import Foundation
import TensorIO
import Watermarking

struct EvidenceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evidence",
        abstract: "Write a replayable evidence bundle for a detection, or verify one.",
        discussion: """
        Write: detects the mark in SUSPECT and writes to --out a folder a third party can check on their own: the \
        manifest, the commitment's opening (--opening; it reveals only that release's subkey) or, with --key, the \
        release subkey (then marked as not committed), the RFC 3161 token and CA (--timestamp, --ca; verified \
        before writing), the full detection report, the settings, the SHA-256 of every suspect file and a \
        README.txt in plain language. With --reference, the reference must be the original committed at release \
        (its tensors' hash is checked), so a staged "original" is refused.

        Verify (--verify BUNDLE): recomputes every hash, opens the commitment, verifies the timestamp (and that it \
        predates --before), re-runs the detection on the suspect files and compares every statistic; prints a plain \
        summary naming any part that does not hold.

        Exit codes: write: 0 detected, 1 not detected (the bundle is written either way), 2 error. \
        Verify: 0 every check holds, 1 a check fails (named), 2 error (not a bundle, unreadable files).

        Examples:
          weightmark evidence leaked/ --opening model-v2.opening.json --manifest model-v2.weightmark.json \\
              --timestamp manifest.tsr --ca tsa-ca.pem --reference original/ --out case-42/
          weightmark evidence --verify case-42/ --before 2026-12-01 --suspect /mnt/copy-of-leaked/
        """
    )

    @Argument(help: ArgumentHelp("SUSPECT (write) or BUNDLE folder (with --verify).", valueName: "path"), completion: .file())
    var target: String

    @Flag(name: .long, help: "Verify the bundle <path> instead of writing one.")
    var verify = false

    @Option(name: .long, help: ArgumentHelp("Owner key (with --release or a manifest that records the release).", valueName: "path"), completion: .file())
    var key: String?

    @Option(name: .long, help: ArgumentHelp("Release id (with --key).", valueName: "id"))
    var release: String?

    @Option(name: .long, help: ArgumentHelp("The release's opening (embed --opening): the key, committed.", valueName: "path"), completion: .file())
    var opening: String?

    @Option(name: .long, help: ArgumentHelp("The embed manifest published at release.", valueName: "path"), completion: .file())
    var manifest: String?

    @Option(name: .long, help: ArgumentHelp("The unmarked original (informed detection). With --verify: where it is now.", valueName: "path"), completion: .file())
    var reference: String?

    @Option(name: .long, help: ArgumentHelp("RFC 3161 timestamp response for the manifest (`weightmark timestamp`).", valueName: "path"), completion: .file())
    var timestamp: String?

    @Option(name: .long, help: ArgumentHelp("CA certificate of the time-stamping authority (PEM).", valueName: "path"), completion: .file())
    var ca: String?

    @Option(name: .long, help: ArgumentHelp("Where to write the bundle folder.", valueName: "path"), completion: .directory)
    var out: String?

    @Option(name: .long, help: ArgumentHelp("Mark formats to look for: auto, v1 or v2.", valueName: "format"))
    var format: DetectFormat = .auto

    @Option(name: .long, help: ArgumentHelp("Largest accepted false-positive bound.", valueName: "p"))
    var alpha: Double = 1e-6

    @Option(name: .long, help: ArgumentHelp("With --verify: the timestamp must be earlier than this date (2026-12-01 or 2026-12-01T12:00:00Z).", valueName: "date"))
    var before: String?

    @Option(name: .long, help: ArgumentHelp("With --verify: where the suspect files are now (default: the path recorded in the bundle).", valueName: "path"), completion: .file())
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
            if key != nil || opening != nil || manifest != nil || timestamp != nil || out != nil {
                throw ValidationError("--verify reads everything from the bundle: drop --key/--opening/--manifest/--timestamp/--out.")
            }
            return
        }
        guard key != nil || opening != nil else { throw ValidationError("give --opening FILE (committed key) or --key OWNER.key with --release ID.") }
        guard manifest != nil else { throw ValidationError("give --manifest, the manifest embed wrote for this release.") }
        guard out != nil else { throw ValidationError("give --out FOLDER, where to write the bundle.") }
        guard (timestamp == nil) == (ca == nil) else { throw ValidationError("--timestamp and --ca go together (the token and its authority's CA certificate).") }
        guard alpha > 0 && alpha < 1 else { throw ValidationError("--alpha must be in (0, 1).") }
        if before != nil || suspect != nil { throw ValidationError("--before and --suspect are for --verify.") }
    }

    func run() async throws {
        if verify { try await runVerify() } else { try await runWrite() }
    }

    func runWrite() async throws {
        let manifestPath = manifest!
        if !force, FileManager.default.fileExists(atPath: out!) { throw TensorIOError.outputExists(path: out!) }
        guard let manifestData = FileManager.default.contents(atPath: manifestPath),
              let m = try? JSONDecoder().decode(EmbedManifest.self, from: manifestData) else {
            throw CLIError("\(manifestPath): not a WeightMark embed manifest (the .weightmark.json written by `embed`).")
        }
        let owner = try key.map { try Console.loadKey($0, quiet: output.quiet) }
        let openingFile = try opening.map { (try CommitmentOpening.load(from: $0), path: $0) }
        let resolved = try DetectionKey.resolve(owner: owner, releaseID: release, opening: openingFile, manifest: (m, path: manifestPath))
        if resolved.status.releaseId == nil {
            throw CLIError("\(manifestPath) records no release: the model was marked with the owner key itself, and a bundle would have to reveal it. Bundles need a model marked for a release (embed's default).")
        }
        var referenceRecord: (path: String, tensorsSHA256: [UInt8])?
        if let reference {
            guard case .safetensors = try ModelFormat.detect(path: reference) else {
                throw CLIError("\(reference): the reference of an evidence bundle must be the original as embed read it (safetensors), so its hash can be checked against the commitment.")
            }
            let digest = TensorDigest.of(try SafetensorsModel(path: reference), workers: ProcessInfo.processInfo.activeProcessorCount)
            if let o = resolved.opening, digest.map({ String(format: "%02x", $0) }).joined() != o.originalTensorsSHA256 {
                throw CLIError("\(reference): its tensors hash to \(digest.map { String(format: "%02x", $0) }.joined()), but release \(o.releaseId) committed to the original \(o.originalTensorsSHA256). Only the committed original can serve as the reference (a different one could be staged).")
            }
            referenceRecord = (reference, digest)
        }
        var stamp: (tokenPath: String, caPath: String, verification: TimeStampVerification)?
        if let timestamp, let ca {
            let v = try await TimeStampVerifier.verify(response: try Timestamp.read(timestamp, what: "timestamp response"), path: timestamp,
                                                       fileDigest: Array(SHA256.hash(data: manifestData)), requestNonce: nil,
                                                       trustRoots: try TimeStampVerifier.loadCertificates(path: ca))
            stamp = (timestamp, ca, v)
        }
        var options = DetectOptions()
        options.selection = m.selection
        options.rank = m.rank
        options.alpha = alpha
        options.format = format
        let suspectModel = try openTensorSource(path: target)
        let referenceModel = try reference.map { try openTensorSource(path: $0) }
        Console.note("detecting with key \(resolved.key.id) (release \(resolved.status.releaseId!))", quiet: output.quiet)
        var report = try Detector.detect(suspect: suspectModel, reference: referenceModel, key: resolved.key, options: options,
                                         expected: m.tensors.map { ($0.name, $0.shape) })
        report.keyCommitment = resolved.status
        let index = try EvidenceBundle.write(.init(
            suspectPath: target, reference: referenceRecord, manifestPath: manifestPath, opening: resolved.opening,
            releaseKey: resolved.opening == nil ? resolved.key : nil, keyCommitted: resolved.status.committed, timestamp: stamp,
            report: report, settings: .init(format: format.rawValue, alpha: alpha, rank: m.rank, selection: m.selection)),
            to: out!, overwrite: force)
        if output.json {
            Console.out(try Console.json(index))
        } else {
            DetectionPrinter.print(report, top: 3)
            Console.out("wrote evidence bundle \(out!): \(index.suspect.files.count) suspect files hashed\(stamp.map { ", manifest time-stamped at \($0.verification.genTimeText)" } ?? ", no timestamp")")
            Console.out("  check it with: weightmark evidence --verify \(out!)")
        }
        if !report.detected { throw ExitCode(1) }
    }

    func runVerify() async throws {
        let result = try await EvidenceBundle.verify(bundle: target, suspect: suspect, reference: reference,
                                                     before: before.flatMap(Self.parseDate))
        if output.json {
            struct Out: Encodable { var valid: Bool; var keyCommitted: Bool; var failed: [String]; var checks: [EvidenceCheck]; var timestamp: TimeStampVerification?; var replayed: DetectionReport? }
            Console.out(try Console.json(Out(valid: result.valid, keyCommitted: result.keyCommitted, failed: result.failedFields,
                                             checks: result.checks, timestamp: result.timestamp, replayed: result.replayed)))
        } else {
            Self.printSummary(result, bundle: target)
        }
        if !result.valid { throw ExitCode(1) }
    }

    static func printSummary(_ v: EvidenceVerification, bundle: String) {
        Console.out(v.valid ? "EVIDENCE VALID: \(bundle)" : "EVIDENCE INVALID: \(bundle) — failed: \(v.failedFields.joined(separator: ", "))")
        if let r = v.replayed {
            Console.out("  In plain words:")
            Console.out(String(format: "  - Re-running the detection on the suspect files gives score Z = %.2f (the bundle claims %.2f).", r.combinedZ, v.claimed?.combinedZ ?? .nan))
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

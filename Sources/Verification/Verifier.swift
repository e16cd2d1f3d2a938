import Alignment
import Evidence
import Foundation
import TensorIO
import Watermarking

/// How one verification runs: what `detect`, `evidence` (writing and replaying), `trace`, `scan` and `bench` ask.
public struct VerificationOptions: Sendable {
    /// Selection, rank, alpha, formats, workers: the detector's options.
    public var detect = DetectOptions()
    /// Align the suspect to the reference before scoring (key-free; ignored without a reference).
    public var align = true
    /// Heads and activation for the alignment, usually from the reference's config.json.
    public var alignment = AlignOptions()
    /// The tensors a manifest says were marked, so missing or reshaped ones are reported.
    public var expected: [SelectedTensor] = []

    public init() {}

    /// Alignment options from the config.json next to `reference`, with the head counts overridden where given.
    public static func alignment(reference: String, heads: Int? = nil, kvHeads: Int? = nil) -> AlignOptions {
        var options = AlignOptions()
        var config = ModelConfig.load(near: reference) ?? ModelConfig()
        if let heads { config.heads = heads; config.kvHeads = kvHeads ?? heads }
        if let kvHeads { config.kvHeads = kvHeads }
        options.config = config
        return options
    }
}

/// The answer to "is this ours, and with which key": the best key's report with the bound paid for every key tried.
public struct Verdict: Sendable {
    public var report: DetectionReport
    /// The key the report is for.
    public var candidate: KeyCandidate
    /// What alignment found (nil without a reference or with alignment off).
    public var alignment: AlignmentReport?
    /// What was scored: the suspect, or the suspect aligned to the reference.
    public var scored: any TensorSource
}

/// The one verification path: resolve keys (`KeyCandidates`) → read (`openTensorSource`) → align to the reference
/// (`ModelAligner`) → pair, score and bound (`Detector.detect`) for every key → the best key, paid for all of them.
///
/// Alignment uses the suspect and the reference only, never a key, so it is done once for all keys and leaves each
/// key's bound exact (docs/ALIGNMENT.md). Trying K keys multiplies the bound by K (Bonferroni): the verdict's
/// `keySearch` says how many and which matched (docs/FORMAT.md, "Keys tried").
public enum Verifier {
    /// Step 3: the suspect aligned to the reference, or the suspect itself when nothing needed undoing.
    public static func aligned(suspect: any TensorSource, reference: (any TensorSource)?,
                               options: VerificationOptions) throws -> (scored: any TensorSource, report: AlignmentReport?) {
        guard let reference, options.align else { return (suspect, nil) }
        let (aligned, report) = try ModelAligner.align(suspect: suspect, reference: reference, options: options.alignment)
        return (report.changed ? aligned : suspect, report)
    }

    /// Verifies `suspect` with every key of `keys`.
    /// - Parameter progress: (key index, keys, tensor name, tensor index, tensors) as the detector advances.
    /// - Throws: what reading, aligning or detecting throws.
    public static func verify(suspect: any TensorSource, reference: (any TensorSource)?, keys: KeyCandidates,
                              options: VerificationOptions,
                              progress: @escaping (Int, Int, String, Int, Int) -> Void = { _, _, _, _, _ in }) throws -> Verdict {
        precondition(keys.count > 0, "no key to verify with")
        // A file that shrinks under its mapping is read on zeros (mapped_guard.c); never a verdict from that.
        let faultsBefore = MappedFile.faultCount
        let (scored, alignment) = try aligned(suspect: suspect, reference: reference, options: options)
        var verdict = try score(scored, reference: reference, alignment: alignment, keys: keys, options: options, progress: progress)
        try MappedFile.checkNoFaults(since: faultsBefore, in: suspect.path)
        if let reference { try MappedFile.checkNoFaults(since: faultsBefore, in: reference.path) }
        verdict.report.suspectFingerprint = SuspectFingerprint.of(path: suspect.path)
        // What was read is judged on the suspect as given (an aligned view only holds what alignment could use).
        verdict.report.applyCoverage(ReadCoverage.of(suspect, selection: options.detect.selection))
        return verdict
    }

    /// Steps 4–6 on an already aligned suspect (`aligned(suspect:reference:options:)`), for every key.
    public static func score(_ scored: any TensorSource, reference: (any TensorSource)?, alignment: AlignmentReport?,
                             keys: KeyCandidates, options: VerificationOptions,
                             progress: @escaping (Int, Int, String, Int, Int) -> Void = { _, _, _, _, _ in }) throws -> Verdict {
        let expected = options.expected.map { (name: $0.name, shape: $0.shape) }
        var best: (report: DetectionReport, index: Int)?
        var trials: [KeyTrial] = []
        for (k, candidate) in keys.candidates.enumerated() {
            let r = try Detector.detect(suspect: scored, reference: reference, key: candidate.key, options: options.detect,
                                        expected: expected) { name, i, total in progress(k, keys.count, name, i, total) }
            trials.append(KeyTrial(label: candidate.label, keyId: candidate.key.id, releaseId: candidate.releaseId, combinedZ: r.combinedZ))
            if best == nil || r.log10PValueBound < best!.report.log10PValueBound { best = (r, k) }
        }
        var report = best!.report
        let candidate = keys.candidates[best!.index]
        if keys.count > 1 {
            report = report.payingForKeys(KeySearchRecord(keysTried: keys.count, matched: trials[best!.index], trials: trials))
        }
        report.keyCommitment = candidate.status
        return Verdict(report: report, candidate: candidate, alignment: alignment, scored: scored)
    }
}

extension Verifier {
    /// Replays an evidence bundle's detection through this path: aligned as the bundle's settings say, scored with the
    /// bundle's key, the bound paid for the keys the writer searched (`settings.keysTried`).
    public static func replay(_ request: ReplayRequest) throws -> DetectionReport {
        var options = VerificationOptions()
        options.detect = request.options
        options.align = request.settings.align ?? false
        if let path = request.referencePath { options.alignment = VerificationOptions.alignment(reference: path, heads: request.settings.heads) }
        options.expected = request.expected
        let verdict = try verify(suspect: request.suspect, reference: request.reference, keys: .single(request.key), options: options)
        return paying(verdict.report, forKeys: request.settings.keysTried ?? 1, releaseId: verdict.report.keyCommitment?.releaseId)
    }

    /// `report` (of one key) with its bound paid for `keysTried` keys searched before it was chosen.
    public static func paying(_ report: DetectionReport, forKeys keysTried: Int, releaseId: String?) -> DetectionReport {
        guard keysTried > 1 else { return report }
        let trial = KeyTrial(label: releaseId.map { "release \($0)" } ?? "owner key", keyId: report.keyId, releaseId: releaseId,
                             combinedZ: report.combinedZ)
        return report.payingForKeys(KeySearchRecord(keysTried: keysTried, matched: trial, trials: report.keySearch?.trials ?? [trial]))
    }
}

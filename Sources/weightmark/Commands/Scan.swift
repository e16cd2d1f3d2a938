import ArgumentParser
import Foundation
import Evidence
import Scanning
import TensorIO
import Watermarking

struct Scan: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sweep folders, archives and file lists for models carrying any of your keys.",
        discussion: """
        Walks every PATH (folders recursively; symbolic links followed, loops and second paths to the same file \
        or folder are not), groups files into models (a folder with model.safetensors.index.json, \
        pytorch_model.bin.index.json or Meta consolidated.NN.pth shards is one model; every other file is sniffed \
        on its own, by content: a safetensors file renamed .txt is found), and looks into .tar and .zip archives \
        (members are copied to a private scratch folder under $TMPDIR, never next to the archive). Nothing is ever \
        written into the scanned trees.

        Two-stage triage. Stage 1 reads headers only and skips what holds no 2-D floating-point matrix of at \
        least 65,536 elements. Stage 2 runs blind detection (format v2, name-free; v1 too where names exist, with \
        --formats auto) on a sample of the matrices, chosen from a hash of the model's path (never the key) and \
        sized so that a model marked at embed's default strength (blind Z 20 over the whole model, \
        --expected-z) is expected to clear the threshold by 2.5; v2 also reads the sample as stored transposed (a sample's \
        pilots may be too few to tell), and a sample Z between 3 and the threshold reads the whole model. \
        Family-wise threshold: a hit needs exp(−z²/2) · models · keys · tests ≤ --alpha (Bonferroni; models = \
        --family-models, tests = stages × formats of that model, plus the transposed sample reading), stated in \
        the trailer.

        Output (stdout): JSON lines only. One record per model: path, format, bytes, bytesRead, status \
        (ok | skipped | error | timeout; "could not read" is never reported as clean), hits (keyId, z, p, \
        familywiseP and the `weightmark detect` command that re-checks it), every score, ms and shard. The last \
        line is the trailer: record count, SHA-256 of the record lines, models tested, keys and threshold. \
        Progress and notes go to stderr, with a summary table when stderr is a terminal.

        Sharding: --shard i/N scans the models whose path (relative to the scan root) hashes to i, so N \
        processes with the same arguments split a sweep without coordination; --shard auto reads \
        JOB_COMPLETION_INDEX (Kubernetes Indexed Job, with WEIGHTMARK_SHARDS = completions), \
        AWS_BATCH_JOB_ARRAY_INDEX/AWS_BATCH_JOB_ARRAY_SIZE (AWS Batch) or \
        SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_MIN/SLURM_ARRAY_TASK_COUNT (Slurm). Merge the shard outputs with \
        `weightmark combine`, which checks every trailer and refuses a missing, duplicated or truncated shard.

        Keys: each --key OWNER.key stands for the owner key, every release recorded in its key store and the default \
        release ids r1…r16 (--enumerate-releases), as for `detect`; every key is paid for in the threshold.

        Exit codes (the same table as every command): 0 hit(s) found, 1 nothing found and everything read, 2 error \
        (bad arguments, unwritable output), 3 incomplete (no hit, but some model could not be read or timed out). \
        A hit takes precedence.

        Examples:
          weightmark scan /mnt/mirror --key owner.key > scan.jsonl
          weightmark scan /data --keys-dir keys/ --timeout 600 > scan.jsonl
          find /data -name '*.gguf' | weightmark scan --paths-from - --key owner.key
          weightmark scan /data --key owner.key --shard 3/16 > shard-3.jsonl
          weightmark combine shard-*.jsonl --markdown scan.md --report scan.json
        """
    )

    @Argument(help: ArgumentHelp("Files and folders to scan.", valueName: "path"), completion: .file())
    var paths: [String] = []

    @OptionGroup var keys: KeyOptions

    @Option(name: .long, help: ArgumentHelp("Read paths to scan from this file, one per line (- for stdin).", valueName: "file"), completion: .file())
    var pathsFrom: String?

    @Option(name: .long, help: ArgumentHelp("Scan only shard i of N (0 ≤ i < N), or auto from the batch engine's environment.", valueName: "i/N|auto"))
    var shard: String?

    @Option(name: .long, help: ArgumentHelp("Skip models (and archive members) larger than this many bytes.", valueName: "bytes"))
    var maxBytes: Int?

    @Option(name: .long, help: ArgumentHelp("Seconds per model before it is reported as timed out.", valueName: "seconds"))
    var timeout: Double?

    @Option(name: .long, help: ArgumentHelp("Family-wise false-positive probability of the whole sweep.", valueName: "p"))
    var alpha: Double = 1e-6

    @Option(name: .long, help: ArgumentHelp("Models the threshold is paid for: the size of the whole sweep, all shards together (more are paid for if more are tested).", valueName: "n"))
    var familyModels: Int = 1_000_000

    @Option(name: .long, help: ArgumentHelp("Mark formats to test: auto (v2, and v1 where tensor names exist; each paid for) or v2.", valueName: "formats"))
    var formats: ScanFormats = .auto

    @Option(name: .long, help: ArgumentHelp("Blind Z of a marked model read in full, which sizes the sample (embed's default target is 20).", valueName: "z"))
    var expectedZ: Double = 20

    @Flag(name: .long, help: "Accepted for uniformity with other commands: stdout is always JSON lines.")
    var json = false

    @Flag(name: [.short, .long], help: "Silence progress and notes on stderr.")
    var quiet = false

    func validate() throws {
        guard alpha > 0 && alpha < 1 else { throw ValidationError("--alpha must be in (0, 1); the default 1e-6 suits legal evidence.") }
        guard familyModels >= 1 else { throw ValidationError("--family-models must be at least 1: the number of models the whole sweep covers.") }
        guard expectedZ > 0 else { throw ValidationError("--expected-z must be positive (embed's default target is 20).") }
        if let maxBytes, maxBytes < 1 { throw ValidationError("--max-bytes must be positive.") }
        if let timeout, !(timeout > 0) { throw ValidationError("--timeout must be a positive number of seconds.") }
        if let shard, shard != "auto", ScanShard(parsing: shard) == nil {
            throw ValidationError("--shard must be i/N with 0 ≤ i < N (e.g. 0/16 … 15/16), or auto.")
        }
        if paths.isEmpty && pathsFrom == nil { throw ValidationError("give paths to scan, or --paths-from FILE (- for stdin).") }
        if keys.isEmpty { throw ValidationError("give at least one --key (or --keys-dir with *.key files): an owner key finds every release recorded in its key store.") }
    }

    /// Every key of the sweep, resolved as every command resolves them: owner keys with their key stores' releases
    /// and the default release ids, openings; each key tried is paid for in the family-wise threshold.
    func loadKeys() throws -> [(key: WatermarkKey, file: String)] {
        let candidates = try keys.resolve(manifest: try keys.loadManifest(), quiet: quiet)
        return candidates.candidates.map { ($0.key, $0.source ?? "") }
    }

    func roots() throws -> [String] {
        var roots = paths
        if let pathsFrom {
            let data: Data
            if pathsFrom == "-" { data = FileHandle.standardInput.readDataToEndOfFile() } else {
                guard let d = FileManager.default.contents(atPath: pathsFrom) else {
                    throw CLIError("\(pathsFrom): cannot read the --paths-from file; check the path.")
                }
                data = d
            }
            roots += String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).map(String.init).filter { !$0.isEmpty }
        }
        return roots
    }

    func run() async throws {
        // A sweep inflates at most 512 MiB per deflated member in memory (peak RSS stays small on hostile trees);
        // a larger one is an error record to check with `weightmark detect` alone.
        ZipArchive.limitInflation(to: 512 << 20)
        let shardSpec: ScanShard
        if shard == "auto" { shardSpec = try ScanShard.fromEnvironment(ProcessInfo.processInfo.environment) }
        else { shardSpec = shard.flatMap(ScanShard.init(parsing:)) ?? .whole }
        var options = ScanOptions()
        options.keys = try loadKeys()
        options.alpha = alpha
        options.familyModels = familyModels
        options.formats = formats
        options.expectedZ = expectedZ
        options.maxBytes = maxBytes
        options.timeout = timeout
        let threshold = options.threshold

        let scanner = ModelScanner(options: options, shard: shardSpec)
        let stdout = FileHandle.standardOutput
        let writer = ScanLineWriter { stdout.write($0) }
        Console.note(String(format: "scan: shard %@; %d keys; family-wise α %.0e over %d models × %d keys × ≤ %d tests: Z ≥ %.2f",
                            shardSpec.description, options.keys.count, alpha, familyModels, options.keys.count,
                            threshold.testsPerKey, threshold.zThreshold), quiet: quiet)
        // The walk streams units as it finds them; each shard walks the whole tree (names and stat only) and
        // opens only the units it owns.
        let status = StatusLine(enabled: !quiet && isatty(2) != 0)
        // Counts only: a sweep of millions of models keeps no records in memory (they are on stdout).
        var statuses: [ScanStatus: Int] = [:]
        var hitPaths: [String] = []
        var problems = 0, units = 0, mine = 0, records = 0, hits = 0, bytesRead = 0, bytes = 0
        var failure: (any Error)?
        let rootList = try roots()
        var walker = ScanWalker(roots: rootList)
        for root in rootList {
            walker.walk(root: root) { unit in
                units += 1
                guard failure == nil, shardSpec.owns(unit.relativePath) else { return }
                mine += 1
                if case .problem = unit.kind { problems += 1 }
                for r in scanner.scan(unit) {
                    do { try writer.emit(r) } catch { failure = error }
                    records += 1
                    statuses[r.status, default: 0] += 1
                    hits += r.hits.count
                    bytesRead += r.bytesRead
                    bytes += r.bytes
                    if !r.hits.isEmpty { hitPaths.append("\(r.path) (\(r.hits.map(\.keyId).joined(separator: ", ")))") }
                    for h in r.hits {
                        status.clear()
                        Console.note(String(format: "HIT %@: key %@ (format %@, %@ stage), Z = %.2f, family-wise p = %.1e", r.path, h.keyId, h.format, h.stage, h.z, h.familywiseP), quiet: quiet)
                    }
                }
                status.show("scanning: \(units) units walked, \(mine) in this shard, \(records) models, \(hits) hits — \((unit.path as NSString).lastPathComponent)")
            }
        }
        status.clear()
        if let failure { throw failure }
        let count = { (s: ScanStatus) in statuses[s] ?? 0 }
        let tested = count(.ok) + count(.timeout) + count(.inconclusive)
        try writer.finish(ScanTrailer(shard: shardSpec.description, records: writer.records, sha256: writer.digest, modelsTested: tested,
                                      keyIds: options.keys.map(\.key.id), threshold: threshold, nonModelFiles: scanner.nonModelFiles,
                                      walkProblems: problems, tool: "weightmark \(WatermarkFormat.toolVersion)"))
        if tested > familyModels {
            Console.note("warning: \(tested) models tested, more than --family-models \(familyModels): `weightmark combine` pays for \(tested) instead.", quiet: quiet)
        }
        if !quiet && isatty(2) != 0 {
            var rows = [["models tested", "\(tested)"], ["hits", "\(hits)"], ["skipped", "\(count(.skipped))"],
                        ["errors", "\(count(.error))"], ["timeouts", "\(count(.timeout))"], ["inconclusive (read in part)", "\(count(.inconclusive))"], ["files without a model", "\(scanner.nonModelFiles)"],
                        ["bytes read / on disk", "\(Console.bytes(bytesRead)) / \(Console.bytes(bytes))"]]
            for h in hitPaths { rows.append(["hit", h]) }
            Console.note(Console.table(["scan \(shardSpec)", ""], rows))
        }
        // The exit-code table every command shares: a hit is found (0); otherwise anything unread or timed out makes
        // the sweep incomplete (3), never a clean "nothing found" (1).
        if hits > 0 { return }
        if count(.timeout) > 0 || count(.error) > 0 || count(.inconclusive) > 0 { throw ExitCode(ExitStatus.inconclusive) }
        throw ExitCode(ExitStatus.nothingFound)
    }
}

/// One status line on stderr, redrawn at most 10 times a second (only on a terminal).
final class StatusLine {
    private let enabled: Bool
    private var last = Date.distantPast
    init(enabled: Bool) { self.enabled = enabled }
    func show(_ text: String) {
        guard enabled, Date().timeIntervalSince(last) > 0.1 else { return }
        last = Date()
        FileHandle.standardError.write(Data(("\r" + String(text.prefix(110)) + "\u{1B}[K").utf8))
    }
    func clear() { if enabled { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) } }
}

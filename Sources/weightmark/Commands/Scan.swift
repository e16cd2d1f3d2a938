import ArgumentParser
import Foundation
import Evidence
import Scanning
import TensorIO
import Watermarking

struct Scan: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sweep folders and archives for models with your marks.",
        discussion: """
        Walks folders (links followed, loops not), .tar and .zip archives and file lists, groups files into \
        models and sniffs each by content; nothing is written into the scanned trees. Headers first, then \
        blind detection on a sample sized to find embed's default mark; a hit needs exp(−z²/2) × models × \
        keys × tests ≤ --alpha (stated in the trailer). Stdout: one JSON line per model (status, hits with \
        the `detect` line that re-checks them), then a trailer with the count and a hash; never "clean" for \
        what could not be read. --shard splits a sweep over a batch engine; `combine` merges the shards. \
        Details: docs/CLI.md#scan.

        Examples:
          weightmark scan /mnt/mirror --key owner.key > scan.jsonl
          find /data -name '*.gguf' | weightmark scan --paths-from - --key owner.key
          weightmark scan /data --key owner.key --shard auto > shard.jsonl

        Exit codes: 0 hit(s), 1 nothing found and all read, 2 error, 3 no hit but something unread.
        """
    )

    @Argument(help: ArgumentHelp("Files and folders to scan.", valueName: "path"), completion: .file())
    var paths: [String] = []

    @OptionGroup var keys: KeyOptions

    @Option(name: .long, help: ArgumentHelp("Paths to scan, one per line (- for stdin).", valueName: "file"), completion: .file())
    var pathsFrom: String?

    @Option(name: .long, help: ArgumentHelp("Only shard i of N, or auto (batch engine's variables).", valueName: "i/N|auto"))
    var shard: String?

    @Option(name: .long, help: ArgumentHelp("Skip models larger than this many bytes.", valueName: "bytes"))
    var maxBytes: Int?

    @Option(name: .long, help: ArgumentHelp("Seconds per model before it times out.", valueName: "seconds"))
    var timeout: Double?

    @Option(name: .long, help: ArgumentHelp("False-positive probability of the whole sweep.", valueName: "p"))
    var alpha: Double = 1e-6

    @Option(name: .long, help: ArgumentHelp("Models the threshold is paid for: the size of the whole sweep, all shards together (more are paid for if more are tested).", valueName: "n", visibility: .hidden))
    var familyModels: Int = 1_000_000

    @Option(name: .long, help: ArgumentHelp("Mark formats to test: auto (v2, and v1 where tensor names exist; each paid for) or v2.", valueName: "formats", visibility: .hidden))
    var formats: ScanMarkVersions = .auto

    @Option(name: .long, help: ArgumentHelp("Blind Z of a marked model read in full, which sizes the sample (embed's default target is 20).", valueName: "z", visibility: .hidden))
    var expectedZ: Double = 20

    @Flag(name: .long, help: ArgumentHelp("Accepted for uniformity with other commands: stdout is always JSON lines.", visibility: .hidden))
    var json = false

    @Flag(name: [.short, .long], help: "No progress or notes on stderr.")
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
                                      walkProblems: problems, tool: "weightmark \(WeightMarkVersion.toolVersion)"))
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

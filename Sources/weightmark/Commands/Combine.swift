import ArgumentParser
import Foundation
import Scanning
import TensorIO
import Watermarking

struct Combine: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge detection reports of disjoint tensor sets, or the shards of a `scan`, into one verdict.",
        discussion: """
        Reports carry each tensor's correlation, norm and weight, so checking a huge model shard by shard \
        (e.g. `detect shard1.safetensors --report r1.json`) and combining gives exactly the verdict of one \
        run over all tensors. Split a model with `detect MODEL --part i/N` (i = 0…N−1): every report then lists \
        the whole model's selected tensors, and combine refuses a set of reports that does not cover all of them \
        (a subset could have been picked for its high scores) unless --allow-partial, which the verdict states. \
        Each tensor's weight is recomputed from its shape. Reports must share key, format version, mode, rank \
        and selection.

        Exit codes: 0 detected, 1 not detected, 2 error.

        Example:
          weightmark detect model/ --key owner.key --part 0/2 --report r0.json
          weightmark detect model/ --key owner.key --part 1/2 --report r1.json
          weightmark combine r0.json r1.json

        Scan shards (the JSON lines of `weightmark scan --shard i/N`) are recognized from their content. Every \
        shard's trailer is checked (record count and SHA-256 of its lines); a truncated, missing or duplicated \
        shard, or shards run with different keys or thresholds, make combine refuse (exit 3) and say which \
        shard to run again. The family-wise correction is then applied over the whole sweep: the declared \
        --family-models, or every model tested if that is more. The merged result is written as Markdown \
        (--markdown, else stdout) and JSON (--report; on stdout with --json). Exit codes for scans: 0 no hit, \
        1 hit(s), 2 errors, 3 incomplete.

        Example (scan):
          weightmark scan /data --key owner.key --shard 0/2 > s0.jsonl
          weightmark scan /data --key owner.key --shard 1/2 > s1.jsonl
          weightmark combine s0.jsonl s1.jsonl --markdown scan.md --report scan.json
        """
    )

    @Argument(help: "Reports written by `detect --json` or `detect --report`, or the outputs of `scan --shard i/N`.", completion: .file())
    var reports: [String]

    @Option(name: .long, help: ArgumentHelp("Scan shards: write the merged Markdown report here (never replaced without --force).", valueName: "path"), completion: .file())
    var markdown: String?

    @Option(name: .long, help: ArgumentHelp("Scan shards: write the merged JSON here (never replaced without --force).", valueName: "path"), completion: .file())
    var report: String?

    @Flag(name: .long, help: "Replace the --markdown / --report files if they exist.")
    var force = false

    @Option(name: .long, help: ArgumentHelp("Threshold (default: the first report's).", valueName: "p"))
    var alpha: Double?

    @Flag(name: .long, help: "Accept reports that do not cover every selected tensor; the verdict then says so.")
    var allowPartial = false

    func validate() throws {
        if let alpha, !(alpha > 0 && alpha < 1) { throw ValidationError("--alpha must be in (0, 1); the default 1e-6 suits legal evidence.") }
    }

    @OptionGroup var output: OutputOptions

    func run() async throws {
        guard !reports.isEmpty else { throw ValidationError("give at least one report file.") }
        if reports.allSatisfy(Self.looksLikeScanShard) { return try combineScan() }
        let parsed = try reports.map { path -> DetectionReport in
            guard let data = FileManager.default.contents(atPath: path) else {
                throw WatermarkError.invalidReport(path: path, reason: "cannot read the file")
            }
            if let d = StrictJSON.duplicateKey(in: data) { throw TensorIOError.duplicateJSONKey(path: path, key: d.key, offset: d.offset) }
            do { return try JSONDecoder().decode(DetectionReport.self, from: data) } catch {
                throw WatermarkError.invalidReport(path: path, reason: "expected the JSON written by `weightmark detect --json`")
            }
        }
        let merged = try DetectionReport.combining(parsed, alpha: alpha, allowPartial: allowPartial)
        if output.json { Console.out(try Console.json(merged)) } else { DetectionPrinter.print(merged, top: 5) }
        if !merged.detected { throw ExitCode(ExitStatus.nothingFound) }
    }

    /// A scan shard starts with a JSON line whose "type" is "model" or "trailer" (a detection report is one
    /// pretty-printed object).
    static func looksLikeScanShard(_ path: String) -> Bool {
        guard let h = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? h.close() }
        let head = h.readData(ofLength: 4096)
        let firstLine = head.prefix { $0 != UInt8(ascii: "\n") }
        guard let object = try? JSONSerialization.jsonObject(with: firstLine) as? [String: Any] else { return false }
        return object["type"] as? String == "model" || object["type"] as? String == "trailer"
    }

    func combineScan() throws {
        for p in [markdown, report].compactMap({ $0 }) where !force && FileManager.default.fileExists(atPath: p) {
            throw TensorIOError.outputExists(path: p)
        }
        var files: [ScanShardFile] = []
        var broken: [String] = []
        for path in reports {
            do { files.append(try ScanShardFile(path: path)) } catch { broken.append("\(error)") }
        }
        let merged = ScanMerge(files)
        let problems = broken + merged.problems
        guard problems.isEmpty else {
            Console.note("combine: incomplete scan, nothing written:\n" + problems.map { "  - \($0)" }.joined(separator: "\n"))
            throw ExitCode(ExitStatus.inconclusive)
        }
        if let markdown { try AtomicFileWriter.write(Array(merged.markdown.utf8), to: markdown, overwrite: force) }
        if let report { try Console.writeJSON(merged, to: report, overwrite: force) }
        if output.json { Console.out(try Console.json(merged)) } else if markdown == nil { Console.out(merged.markdown) }
        if merged.exitCode != 0 { throw ExitCode(merged.exitCode) }
    }
}

import ArgumentParser
import Foundation
import Scanning
import TensorIO
import Watermarking

struct Combine: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge reports of tensor parts, or scan shards, into one verdict.",
        discussion: """
        Detection reports (`detect --part i/N --report`) carry each tensor's correlation, norm and weight: \
        combined, they give exactly the verdict of one run over all tensors; a set that does not cover every \
        selected tensor is refused unless --allow-partial (the verdict says so). Scan shards (`scan --shard \
        i/N`) are recognized by content; every trailer is checked and a missing, truncated or duplicated \
        shard is named; the family-wise threshold is applied over the whole sweep. Details: docs/CLI.md#combine.

        Examples:
          weightmark combine r0.json r1.json
          weightmark combine s0.jsonl s1.jsonl --markdown scan.md --report scan.json

        Exit codes: 0 detected / hit(s), 1 nothing found, 2 error, 3 incomplete shard set or unread models.
        """
    )

    @Argument(help: "Reports of `detect --report`, or `scan --shard` outputs.", completion: .file())
    var reports: [String]

    @Option(name: .long, help: ArgumentHelp("Scan shards: write the merged Markdown here.", valueName: "path"), completion: .file())
    var markdown: String?

    @Option(name: .long, help: ArgumentHelp("Scan shards: write the merged JSON here.", valueName: "path"), completion: .file())
    var report: String?

    @Flag(name: .long, help: "Replace the --markdown / --report files if they exist.")
    var force = false

    @Option(name: .long, help: ArgumentHelp("Threshold (default: the first report's).", valueName: "p"))
    var alpha: Double?

    @Flag(name: .long, help: "Accept reports that miss tensors (the verdict says so).")
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

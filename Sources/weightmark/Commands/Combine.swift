import ArgumentParser
import Foundation
import Watermarking

struct Combine: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge detection reports of disjoint tensor sets into one verdict.",
        discussion: """
        Reports carry each tensor's correlation, norm and weight, so checking a huge model shard by shard \
        (e.g. `detect shard1.safetensors --report r1.json`) and combining gives exactly the verdict of one \
        run over all tensors. Reports must share key, format version and mode.

        Exit codes: 0 detected, 1 not detected, 2 error.

        Example:
          weightmark combine r1.json r2.json r3.json
        """
    )

    @Argument(help: "Reports written by `detect --json` or `detect --report`.")
    var reports: [String]

    @Option(name: .long, help: ArgumentHelp("Threshold (default: the first report's).", valueName: "p"))
    var alpha: Double?

    @OptionGroup var output: OutputOptions

    func run() async throws {
        guard !reports.isEmpty else { throw ValidationError("give at least one report file.") }
        let parsed = try reports.map { path -> DetectionReport in
            guard let data = FileManager.default.contents(atPath: path) else {
                throw WatermarkError.invalidReport(path: path, reason: "cannot read the file")
            }
            do { return try JSONDecoder().decode(DetectionReport.self, from: data) } catch {
                throw WatermarkError.invalidReport(path: path, reason: "expected the JSON written by `weightmark detect --json`")
            }
        }
        let merged = try DetectionReport.combining(parsed, alpha: alpha)
        if output.json { Console.out(try Console.json(merged)) } else { DetectionPrinter.print(merged, top: 5) }
        if !merged.detected { throw ExitCode(1) }
    }
}

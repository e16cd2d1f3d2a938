import ArgumentParser
import Foundation
import Watermarking

struct Combine: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge detection reports of disjoint tensor sets into one verdict.",
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
        """
    )

    @Argument(help: "Reports written by `detect --json` or `detect --report`.", completion: .file())
    var reports: [String]

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
        let parsed = try reports.map { path -> DetectionReport in
            guard let data = FileManager.default.contents(atPath: path) else {
                throw WatermarkError.invalidReport(path: path, reason: "cannot read the file")
            }
            do { return try JSONDecoder().decode(DetectionReport.self, from: data) } catch {
                throw WatermarkError.invalidReport(path: path, reason: "expected the JSON written by `weightmark detect --json`")
            }
        }
        let merged = try DetectionReport.combining(parsed, alpha: alpha, allowPartial: allowPartial)
        if output.json { Console.out(try Console.json(merged)) } else { DetectionPrinter.print(merged, top: 5) }
        if !merged.detected { throw ExitCode(1) }
    }
}

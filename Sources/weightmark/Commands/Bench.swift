import Alignment
import ArgumentParser
import Attacks
import Foundation
import Inference
import LinearAlgebra
import Robustness
import TensorIO
import Watermarking

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure how well the mark survives attacks.",
        discussion: """
        Marks MODEL, then applies every attack family of the grid (casts, quantizers, pruning, noise, \
        low-rank, LoRA, merges, permutations, rotations, re-packaging…) at several strengths, and reports \
        blind and informed Z, the bound and the verdict at --alpha, the damage ‖W′−W‖/‖W‖ and, for BERT \
        and Llama models, the function kept (a forward pass in Swift). Writes results.md/.json/.csv and \
        plots to --out. --collusion measures traitor tracing instead. Details: docs/CLI.md#bench.

        Examples:
          weightmark bench model/ --key owner.key --out bench/ --quick
          weightmark bench model/ --key owner.key --out bench/ --collusion

        \(ExitStatus.simpleTable)
        """
    )

    @Argument(help: "Unmarked model to mark and attack (any format read).", completion: .file())
    var model: String

    @Option(name: .long, help: ArgumentHelp("Key file.", valueName: "path"), completion: .file())
    var key: String

    @Option(name: .long, help: ArgumentHelp("Output folder for results.", valueName: "path"), completion: .directory)
    var out: String

    @Option(name: .long, help: ArgumentHelp("Shaping of the mark; both compares them side by side.", valueName: "shaping"))
    var shaping: BenchShaping = .uniform

    @Option(name: .long, help: ArgumentHelp("Only these families (comma-separated name prefixes).", valueName: "list"))
    var families: String?

    @Flag(name: .long, help: "One point per family (the middle of its grid).")
    var quick = false

    @Option(name: .long, help: ArgumentHelp("Decision threshold on the p-value bound.", valueName: "p"))
    var alpha: Double = 1e-6

    @Flag(name: .long, help: "Replace files in --out.")
    var force = false

    @Flag(name: .long, help: "Traitor tracing against collusions of personal copies.")
    var collusion = false

    @Option(name: .long, help: ArgumentHelp("With --collusion: part f of δ given to the fingerprint, as `embed --fingerprint-share`.", valueName: "f"))
    var fingerprintShare: Double = defaultFingerprintShare

    @OptionGroup var output: OutputOptions

    func validate() throws {
        try OutputPaths.refuseOverlap(output: out, inputs: [model])
        guard fingerprintShare > 0, fingerprintShare <= 0.8 else {
            throw ValidationError("--fingerprint-share must be in (0, 0.8] (default \(defaultFingerprintShare)).")
        }
    }

    func run() async throws {
        let key = try Console.loadKey(key, quiet: output.quiet)
        let input = try RewritableModel(path: model, quiet: output.quiet)
        let original = input.model
        if collusion { return try runCollusion(original: original, key: key) }
        let config = ModelConfig.load(near: model)
        let llama = Self.llamaConfig(near: model, quiet: output.quiet)
        var grid = SweepFamily.defaults
            + SweepFamily.derivatives(layout: TransformerLayout.recognize(names: original.tensors.map(\.name), config: config))
        if let families {
            let wanted = families.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            grid = grid.filter { f in f.name == "none" || wanted.contains { f.name.lowercased().hasPrefix($0) } }
        }
        if quick { grid = grid.map { var f = $0; f.points = [f.points[f.points.count / 2]]; return f } }
        if FileManager.default.fileExists(atPath: out + "/results.json") && !force {
            throw TensorIOError.outputExists(path: out + "/results.json")
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let shapings = shaping.shapings
        var all: [String: [SweepPoint]] = [:]
        for s in shapings {
            var options = EmbedOptions()
            options.shaping = s
            let plan = try Embedder.plan(original, options: options)
            let markedPath = "\(out)/.marked-\(s.rawValue).safetensors"
            try? FileManager.default.removeItem(atPath: markedPath)
            Console.note("marking \(original.path) (\(s.rawValue) shaping, δ = \(String(format: "%.2e", plan.delta)))", quiet: output.quiet)
            let embedBar = ProgressBar(total: plan.entries.count, label: "embed \(s.rawValue)", enabled: !output.quiet)
            _ = try Embedder.embed(original, key: key, options: options, plan: plan, to: markedPath, overwrite: true) { t, _ in
                embedBar.advance(detail: t.name)
            }
            embedBar.finish()
            defer { try? FileManager.default.removeItem(atPath: markedPath) }
            var detect = DetectOptions()
            detect.alpha = alpha
            let runner = try SweepRunner(original: original, marked: try SafetensorsModel(path: markedPath), key: key,
                                         options: detect, delta: plan.delta, config: config, llama: llama)
            if let failure = runner.functionProbeFailure { Console.note("function kept not measured: \(failure)", quiet: output.quiet) }
            let total = grid.reduce(0) { $0 + $1.points.count }
            let bar = ProgressBar(total: total, label: "bench \(s.rawValue)", enabled: !output.quiet)
            let points = try await runner.run(grid) { p, _, _ in bar.advance(detail: p.label) }
            bar.finish()
            all[s.rawValue] = points
            let title = "WeightMark robustness: \((model as NSString).lastPathComponent), \(s.rawValue) shaping"
            let notes = [
                "model: \(model) (\(original.parameterCount) parameters); key \(key.id)",
                String(format: "strength: δ = %.2e per marked tensor (target blind Z 20), %d tensors marked", plan.delta, plan.entries.count),
                "detected = rigorous p-value bound ≤ \(String(format: "%.0e", alpha)); damage = ‖W′−W‖/‖W‖ vs the marked weights",
                "merge partner: synthetic independent model with matched per-row statistics",
                Self.functionNote(runner.functionProbe),
                "BLAS: \(BLASInfo.current)",
                "command: weightmark bench \(CommandLine.arguments.dropFirst(2).joined(separator: " "))",
            ]
            let suffix = shapings.count > 1 ? "-\(s.rawValue)" : ""
            try write(SweepRendering.markdown(points, title: title, notes: notes), to: "\(out)/results\(suffix).md")
            try write(SweepRendering.csv(points), to: "\(out)/results\(suffix).csv")
            try write(SweepRendering.svg(points, families: grid, alpha: alpha, title: title), to: "\(out)/plots\(suffix).svg")
            if points.contains(where: { $0.functionMinCosine != nil }) {
                try write(SweepRendering.functionSVG(points, alpha: alpha, title: title + ": function kept vs Z",
                                                     measure: runner.functionProbe?.measure ?? "probe outputs"), to: "\(out)/function\(suffix).svg")
            }
            if !output.json {
                Console.out("\n\(title)")
                Console.out(Console.table(SweepRendering.header, SweepRendering.rows(points), rightAligned: [2, 3, 5]))
            }
        }
        try Console.writeJSON(all, to: "\(out)/results.json", overwrite: true)
        if output.json {
            Console.out(try Console.json(all))
        } else {
            let suffixes = shapings.count > 1 ? shapings.map { "-\($0.rawValue)" } : [""]
            let files = suffixes.flatMap { ["results\($0).md", "results\($0).csv", "plots\($0).svg"] } + ["results.json"]
            Console.out("\nwrote \(files.map { "\(out)/\($0)" }.joined(separator: ", "))")
        }
    }

    /// The Llama forward pass's config.json next to `model`; nil (with a note on stderr) when it cannot drive it.
    static func llamaConfig(near model: String, quiet: Bool) -> LlamaConfig? {
        do {
            return try LlamaConfig.load(near: model)
        } catch {
            Console.note("function kept not measured: \(error)", quiet: quiet)
            return nil
        }
    }

    static func functionNote(_ probe: FunctionProbe?) -> String {
        switch probe {
        case let probe?:
            "function kept: min / mean cosine of the \(probe.measure) with the marked model's (a forward pass in Swift)"
                + (probe.isCausal ? "; top-1 = share of the probe positions whose most likely next token is unchanged" : "")
        case nil: "function kept: not measured (no BERT or Llama forward pass for this model)"
        }
    }

    func write(_ text: String, to path: String) throws {
        try AtomicFileWriter.write(Array(text.utf8), to: path, overwrite: true)
    }
}

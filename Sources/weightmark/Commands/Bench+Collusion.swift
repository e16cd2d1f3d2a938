import Foundation
import Robustness
import TensorIO
import Watermarking

/// `bench --collusion`: the traitor-tracing table.
extension Bench {
    func runCollusion(original: SafetensorsModel, key: WatermarkKey) throws {
        if FileManager.default.fileExists(atPath: out + "/collusion.json") && !force {
            throw TensorIOError.outputExists(path: out + "/collusion.json")
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        Console.note("personal copies of \(original.path) for 1,000 recipients (owner mark computed once)", quiet: output.quiet)
        let bench = try CollusionBench(original: original, key: key, share: fingerprintShare, alpha: alpha)
        let variants = CollusionStrategy.allCases.flatMap { s in [(strategy: s, int4: false), (strategy: s, int4: true)] }
        let bar = ProgressBar(total: 3, label: "collusion", enabled: !output.quiet)
        var points: [CollusionPoint] = []
        for (k, c) in [2, 4, 8].enumerated() {
            points += try bench.run(colluders: c, variants: variants, group: k)
            bar.advance(detail: "\(c) colluders")
        }
        bar.finish()
        let title = "WeightMark traitor tracing: \((model as NSString).lastPathComponent), 1,000 registered recipients"
        let notes = [
            "key \(key.id); owner mark δ_o = sqrt(1 − f²)·δ, fingerprint δ_f = f·δ, f = \(bench.copies.share), δ = \(String(format: "%.2e", bench.copies.delta))",
            "caught = colluders whose family-wise bound (Chernoff × 1,000) is ≤ \(String(format: "%.0e", alpha)); innocents: the registered non-colluders and 10,000 extra ids",
            "command: weightmark bench \(CommandLine.arguments.dropFirst(2).joined(separator: " "))",
        ]
        let md = "# \(title)\n\n" + notes.map { "- \($0)\n" }.joined() + "\n" + CollusionBench.markdown(points, alpha: alpha)
        try AtomicFileWriter.write(Array(md.utf8), to: out + "/collusion.md", overwrite: true)
        try Console.writeJSON(points, to: out + "/collusion.json", overwrite: true)
        if output.json {
            Console.out(try Console.json(points))
        } else {
            Console.out("\n" + md)
            Console.out("wrote \(out)/collusion.md, \(out)/collusion.json")
        }
    }
}

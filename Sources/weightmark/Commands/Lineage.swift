import Alignment
import ArgumentParser
import Foundation
import Lineage
import TensorIO

struct LineageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lineage",
        abstract: "Without a mark or key: does a suspect derive from your model?",
        discussion: """
        For models released before they were marked, and copies whose mark is gone. H0: the suspect was trained \
        independently of ORIGINAL. Each feed-forward unit of the suspect is sent to its most similar unit of \
        ORIGINAL (residual streams fitted on the token embeddings); a copy keeps its units in order, an \
        independent model cannot. That p-value is exact under H0 and pays for every layer pair tried. A copy \
        whose units were permuted is caught by a second statistic whose p-value is only approximate, and says \
        so (docs/LINEAGE.md).

        Exit codes: 0 derived, 1 not derived, 2 error, 3 inconclusive (too much of the suspect unread).

        Examples:
          weightmark lineage leaked/ --reference original/
          weightmark lineage leaked.gguf --reference original/ --json
        """
    )

    @Argument(help: "Suspected copy (any format `inspect` reads).", completion: .file())
    var suspect: String

    @Option(name: .long, help: ArgumentHelp("Your original.", valueName: "path"), completion: .file())
    var reference: String

    @Option(name: .long, help: ArgumentHelp("Largest p-value that says derived.", valueName: "p"))
    var alpha: Double = 1e-6

    @Flag(name: .long, help: "Compare every suspect layer with every original layer (default when the layer counts differ or the models are small).")
    var allPairs = false

    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard alpha > 0 && alpha < 1 else { throw ValidationError("--alpha must be in (0, 1).") }
    }

    func run() async throws {
        let suspectModel = try openTensorSource(path: suspect)
        let referenceModel = try openTensorSource(path: reference)
        var options = LineageOptions()
        options.alpha = alpha
        if allPairs { options.allPairs = true }
        let report = try LineageTest.run(suspect: suspectModel, reference: referenceModel, options: options,
                                         config: ModelConfig.load(near: reference)) {
            Console.note("lineage: \($0)", quiet: output.quiet)
        }
        if output.json {
            Console.out(try Console.json(report))
        } else {
            for line in LineageText.lines(report) { Console.out(line) }
        }
        switch report.verdict {
        case "derived": return
        case "inconclusive": throw ExitCode(ExitStatus.inconclusive)
        default: throw ExitCode(ExitStatus.nothingFound)
        }
    }
}

/// The human report, shared by `lineage` and `detect --reference`.
enum LineageText {
    static func p(_ log10p: Double) -> String {
        if log10p >= -3 { return String(format: "%.3g", pow(10, log10p)) }
        if log10p.isInfinite { return "0" }
        let e = floor(log10p), m = pow(10, log10p - e)
        return String(format: "%.1fe%d", m, Int(e))
    }

    static func lines(_ r: LineageReport) -> [String] {
        var out: [String] = []
        let verdict = r.verdict.uppercased()
        out.append("\(verdict): \(r.suspect) against \(r.reference) (lineage, no mark; \(r.layout), \(r.suspectLayers) vs \(r.referenceLayers) layers)")
        out.append("  exact test: p ≤ \(p(r.log10PExact)) (units kept in order; \(r.pairsTried) layer pairs paid for)")
        out.append("  permutation-robust test: p ≈ \(p(r.log10PRobust)) (approximate under H0; see docs/LINEAGE.md)")
        if let basis = r.basis { out.append("  decided by the \(basis) test at alpha \(r.alpha)") }
        out.append("  residual stream: \(r.residualFit)")
        let matched = r.localization.filter { $0.referenceLayer != nil }
        if !matched.isEmpty {
            let map = matched.map { "\($0.suspectLayer)←\($0.referenceLayer!)\($0.basis == "approximate" ? "≈" : "")" }
            out.append("  layers derived (suspect←original): " + map.joined(separator: " "))
        }
        let unmatched = r.localization.filter { $0.referenceLayer == nil }.map { String($0.suspectLayer) }
        if !unmatched.isEmpty && !matched.isEmpty { out.append("  layers with no significant match: " + unmatched.joined(separator: " ")) }
        for n in r.notes { out.append("  note: " + n) }
        out.append("  (\(String(format: "%.1f", r.seconds)) s)")
        return out
    }
}

import Alignment
import ArgumentParser
import Foundation
import TensorIO
import Verification

struct Align: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Undo function-preserving edits against your original.",
        discussion: """
        Finds, from the suspect and the original alone (never the key), the edits that keep a model's \
        function: permuted FFN units and attention heads, rescaled or dropped units, a rotated residual \
        stream; undoes them and writes the aligned model. `detect --reference` runs the same step, so its \
        bound is unchanged. BERT and Llama names; heads from config.json next to the reference. \
        Details: docs/CLI.md#align.

        Exit codes: 0 written, 2 error.

        Examples:
          weightmark align leaked/ --reference original/ --out leaked-aligned/
          weightmark align leak.safetensors --reference original/ --out a.safetensors --json
        """
    )

    @Argument(help: "Suspected copy (any format `inspect` reads).", completion: .file())
    var suspect: String

    @Option(name: .long, help: ArgumentHelp("The unmarked original.", valueName: "path"), completion: .file())
    var reference: String

    @Option(name: .long, help: ArgumentHelp("Where to write the aligned model (safetensors, in the suspect's layout).", valueName: "path"),
            completion: .file())
    var out: String

    @Option(name: .long, help: ArgumentHelp("Attention heads (default: config.json next to the reference).", valueName: "n"))
    var heads: Int?

    @Option(name: .long, help: ArgumentHelp("Key/value heads under grouped-query attention (default: config.json, else --heads).", valueName: "n"))
    var kvHeads: Int?

    @Flag(name: .long, help: "Replace --out if it exists.")
    var force = false

    @OptionGroup var output: OutputOptions

    func validate() throws {
        if let heads, heads < 1 { throw ValidationError("--heads must be ≥ 1.") }
        if let kvHeads, kvHeads < 1 || (heads.map { $0 % kvHeads != 0 } ?? false) {
            throw ValidationError("--kv-heads must be ≥ 1 and divide --heads.")
        }
    }

    func run() async throws {
        try OutputPaths.refuseOverlap(output: out, inputs: [suspect, reference])
        if FileManager.default.fileExists(atPath: out) && !force { throw TensorIOError.outputExists(path: out) }
        let input = try RewritableModel(path: suspect, quiet: output.quiet)
        let referenceModel = try openTensorSource(path: reference)
        let options = VerificationOptions.alignment(reference: reference, heads: heads, kvHeads: kvHeads)
        let (aligned, report) = try ModelAligner.align(suspect: input.model, reference: referenceModel, options: options) {
            Console.note("aligning: \($0)", quiet: output.quiet)
        }
        let rewritten = aligned.rewrittenNames
        try ModelWriter.write(like: input.model, to: out, overwrite: force) { t in
            guard rewritten.contains(t.name), let shape = aligned.sourceTensor(named: t.name)?.shape else { return nil }
            let values = try aligned.decodeFloats(named: t.name)
            let dtype = t.dtype.isSupportedFloat ? t.dtype : .f32
            return OutputTensor(name: t.name, dtype: dtype, shape: t.shape.count == 1 ? [values.count] : shape,
                                bytes: FloatConversion.encode(values, as: dtype))
        }
        if output.json {
            struct Result: Encodable { var suspect: String; var reference: String; var output: String; var alignment: AlignmentReport }
            Console.out(try Console.json(Result(suspect: suspect, reference: reference, output: out, alignment: report)))
        } else {
            Console.out("aligned \(suspect) to \(reference) → \(out) (\(report.layout ?? "layout not recognized"), \(rewritten.count) tensors rewritten, \(String(format: "%.1f", report.seconds)) s)")
            for line in report.summaryLines { Console.out("  " + line) }
        }
    }
}

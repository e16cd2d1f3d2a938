import Alignment
import ArgumentParser
import Foundation
import TensorIO
import Verification

struct Align: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Undo function-preserving edits of a suspect against your original, and write the aligned model.",
        discussion: """
        A leaker can change a model's weights without changing what it computes: permute the FFN hidden units, \
        permute attention heads (within key/value groups under grouped-query attention), rescale SwiGLU up-path \
        units (sign included) or ReLU units, drop or duplicate units, rotate the residual stream of an RMSNorm \
        model (Llama) after fusing the norm weights into the next matrices. `align` finds each of these from the \
        suspect and the original alone — never the key — and undoes it: Jonker–Volgenant assignment on unit and head \
        similarities, orthogonal Procrustes on the token embedding, per-unit scale fits.

        `detect --reference` runs the same alignment before informed detection (skipped at the cost of one pass \
        when the suspect is already aligned; --no-align turns it off). Because alignment never sees the key, \
        detection's false-positive bound holds unchanged.

        Recognizes BERT and Llama tensor names; heads and activation come from the config.json next to the \
        reference (--heads/--kv-heads override it). The report lists, per layer, what was permuted, rescaled, \
        dropped or merged, the fit residual ‖S − R‖/‖R‖ before and after, and ambiguous units.

        Exit codes: 0 written, 2 error.

        Examples:
          weightmark align leaked/ --reference original/ --out leaked-aligned/
          weightmark align leaked.safetensors --reference original/ --out aligned.safetensors --json
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

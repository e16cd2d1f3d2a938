import Alignment
import ArgumentParser
import Attacks
import Foundation
import Inference
import TensorIO
import Watermarking

struct Attack: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Apply an attack (or a chain) as a leaker would.",
        discussion: """
        Writes the attacked model to --out in the input's layout (safetensors; a PyTorch, Meta, NumPy or GGUF input \
        is read through a temporary safetensors copy and written as one safetensors file). Attacks are deterministic (random ones take \
        seed=). Chain attacks with commas; each applies to the previous one's output:
          weightmark attack marked/ --out pruned-int4/ --attack prune:fraction=0.5,int4:group=128
        `overwrite` and `collusion` add marks of foreign keys at the default strength (collusion needs the \
        unmarked original, --reference). `merge` uses --partner when given, else a synthetic independent model.

        For a BERT or Llama model with its config.json alongside, also reports the function kept, by a forward pass \
        in Swift against the input model: min and mean cosine of 12 probe sentences' embeddings (BERT), or of the \
        last-position logits of 8 fixed token sequences and the share of unchanged top-1 next tokens (Llama) \
        (`functionKept` in --json).

        Use --list to see every attack and its parameters.
        """
    )

    @Argument(help: "Model to attack (any format `inspect` reads).", completion: .file())
    var model: String?

    @Option(name: .long, help: ArgumentHelp("Where to write the attacked model.", valueName: "path"), completion: .file())
    var out: String?

    @Option(name: .long, help: ArgumentHelp("Attack spec, e.g. int8 or prune:fraction=0.7 or a chain.", valueName: "spec"))
    var attack: String?

    @Option(name: .long, help: ArgumentHelp("Unmarked original (needed by collusion).", valueName: "path"), completion: .file())
    var reference: String?

    @Option(name: .long, help: ArgumentHelp("Independent model of the same shapes for merge.", valueName: "path"), completion: .file())
    var partner: String?

    @Flag(name: .long, help: "List the attacks and their parameters.")
    var list = false

    @Flag(name: .long, help: "Replace --out if it exists.")
    var force = false

    @OptionGroup var output: OutputOptions

    func run() async throws {
        if list {
            Console.out(Console.table(["attack", "parameters (defaults)", "what it does"],
                                      AttackCatalog.entries.map { [$0.name, $0.parameters, $0.summary] }))
            return
        }
        guard let model, let out, let attack else {
            throw ValidationError("give MODEL, --out and --attack (or --list to see the attacks).")
        }
        let chain: [any WeightAttack]
        do { chain = try AttackCatalog.chain(attack) } catch { throw ValidationError("--attack: \(error)") }
        let input = try RewritableModel(path: model, quiet: output.quiet)
        let source = input.model
        try OutputPaths.refuseOverlap(output: out, inputs: [model, reference ?? ""])
        if FileManager.default.fileExists(atPath: out) && !force { throw TensorIOError.outputExists(path: out) }
        // Re-marking attacks use the shipped format (v2) and its strength; a model with no tensor embed would select
        // (a tiny one) can still take every other attack.
        let plan = Result { try Embedder.plan(source, options: EmbedOptions()) }
        let originalInput = try reference.map { try RewritableModel(path: $0, quiet: output.quiet) }
        let partnerInput = try partner.map { try RewritableModel(path: $0, quiet: output.quiet) }
        let context = AttackContext(
            remark: { copy, name, rows, cols, values, scale in
                try Remarking.mark(copy: copy, name: name, rows: rows, cols: cols, values: &values, delta: try plan.get().delta * scale)
            },
            original: originalInput?.model, mergePartner: partnerInput?.model)
        let start = Date()
        let bar = ProgressBar(total: 1, label: "attack", enabled: !output.quiet)
        let attacked = try AttackRunner.write(chain, to: source, context: context, destination: out, overwrite: force) { done, total, name in
            if done == 1 { bar.reset(total: total) }
            bar.advance(detail: name)
        }
        bar.finish()
        let damage = try AttackRunner.damage(attacked, against: source) { $0.shape.count == 2 && $0.dtype.isSupportedFloat }
        let specs = chain.map(\.spec).joined(separator: " → ")
        // Function kept (BERT or Llama models with a config.json): the probe inputs through both models.
        var kept: FunctionKept?
        if let probe = FunctionProbe.recognize(names: source.tensors.map(\.name), bertHeads: ModelConfig.load(near: model)?.heads,
                                               llama: Bench.llamaConfig(near: model, quiet: output.quiet)) {
            do {
                kept = FunctionKept(reference: try probe.outputs(of: source), attacked: try probe.outputs(of: source, overrides: attacked.mapValues(\.values)))
            } catch {
                Console.note("function kept not measured: \(error)", quiet: output.quiet)
            }
        }
        if output.json {
            struct Result: Encodable {
                var attack: String; var output: String; var tensorsAttacked: Int; var relativeError: Double; var functionKept: FunctionKept?
            }
            Console.out(try Console.json(Result(attack: specs, output: out, tensorsAttacked: attacked.count, relativeError: damage, functionKept: kept)))
        } else {
            Console.out("\(specs): attacked \(attacked.count) tensors of \(model) in \(String(format: "%.1f", Date().timeIntervalSince(start))) s → \(out)")
            Console.out(String(format: "  relative error over 2-D float tensors ‖W′−W‖/‖W‖ = %.4f", damage))
            if let kept, let top1 = kept.top1Agreement {
                Console.out(String(format: "  function kept: last-position logits cosine vs the input model min %.5f, mean %.5f (%d token sequences); top-1 next token unchanged at %.1f%% of positions",
                                   kept.minCosine, kept.meanCosine, kept.sentences, 100 * top1))
            } else if let kept {
                Console.out(String(format: "  function kept: sentence-embedding cosine vs the input model min %.5f, mean %.5f (%d probe sentences)",
                                   kept.minCosine, kept.meanCosine, kept.sentences))
            }
            if chain.contains(where: { $0 is MergeAttack }) && partner == nil {
                Console.out("  merge partner: synthetic independent model with matched per-row statistics (no --partner given)")
            }
        }
    }
}

import Conversion
import ArgumentParser
import Foundation
import TensorIO

struct Convert: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert safetensors to GGUF as llama.cpp does.",
        discussion: """
        Supports BERT-family (e.g. MiniLM) and Llama-family models: tensors are renamed to GGUF names, \
        Llama q_proj/k_proj rows get llama.cpp's rotary permutation, 1-D tensors, norms and BERT's position and \
        token-type embeddings are stored as F32 and the other weight matrices in --type. The tokenizer is written \
        as llama.cpp expects it: a BERT vocab.txt in llama.cpp's WordPiece form; a model without a tokenizer \
        (e.g. `weightmark synth` output) gets a placeholder byte-level SentencePiece vocabulary so llama.cpp can \
        still load and run it. Rows that do not split into the type's blocks fall back as llama-quantize does \
        (Q4_K → Q5_0, Q6_K → Q8_0; otherwise F16). Hyperparameters come from config.json next to the weights.

        Use it to check what a leaker's llama.cpp copy of your model would look like:
          weightmark convert marked/ --to gguf --type Q4_K --out marked-Q4_K.gguf
          weightmark detect marked-Q4_K.gguf --key owner.key --reference original/
        """
    )

    @Argument(help: "Safetensors model (file or folder with config.json).", completion: .file())
    var model: String

    @Option(name: .long, help: ArgumentHelp("Output format.", valueName: "format"))
    var to: ConvertFormat = .gguf

    @Option(name: .long, help: ArgumentHelp("ggml type of the matrices (any letter case); tensors a type cannot hold fall back as llama.cpp's converter does.", valueName: "type"))
    var type: GGUFOutputType = GGUFOutputType(type: .q8_0)

    @Option(name: .long, help: ArgumentHelp("Output .gguf file.", valueName: "path"), completion: .file())
    var out: String

    @Flag(name: .long, help: "Replace --out if it exists.")
    var force = false

    @OptionGroup var output: OutputOptions

    func run() async throws {
        let source = try SafetensorsModel(path: model)
        try OutputPaths.refuseOverlap(output: out, inputs: [model])
        if FileManager.default.fileExists(atPath: out) && !force { throw TensorIOError.outputExists(path: out) }
        let ggmlType = type.type
        let start = Date()
        let bar = ProgressBar(total: source.tensors.count, label: "convert", enabled: !output.quiet)
        let report = try GGUFConverter.convert(source, type: ggmlType, to: out, overwrite: force) { _, _, name in bar.advance(detail: name) }
        bar.finish()
        if output.json {
            struct Result: Encodable {
                var output: String; var architecture: String; var type: String; var tensors: Int; var bytes: Int
                var tokenizer: String; var dropped: [String]; var fallbacks: [String: String]
            }
            Console.out(try Console.json(Result(output: out, architecture: report.architecture.rawValue, type: ggmlType.name,
                                                tensors: report.tensors, bytes: report.bytes, tokenizer: report.tokenizer,
                                                dropped: report.dropped,
                                                fallbacks: report.fallbacks.mapValues(\.name))))
            return
        }
        Console.out("wrote \(out): \(report.architecture.rawValue), \(report.tensors) tensors, \(Console.bytes(report.bytes)) of tensor data, \(ggmlType.name), in \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
        Console.out("  tokenizer: \(report.tokenizer)")
        if !report.dropped.isEmpty { Console.out("  not converted (llama.cpp drops them too): \(report.dropped.joined(separator: ", "))") }
        if !report.fallbacks.isEmpty {
            let byType = Dictionary(grouping: report.fallbacks, by: { $0.value.name }).map { "\($0.value.count) matrices → \($0.key)" }
            Console.out("  rows not divisible into \(ggmlType.name) blocks: \(byType.sorted().joined(separator: ", "))")
        }
    }
}

import ArgumentParser
import Foundation
import TensorIO

struct Inspect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List a model's tensors, totals and metadata.",
        discussion: """
        PATH is a .safetensors file, a folder holding one, a sharded Hugging Face folder \
        (model.safetensors.index.json plus shards), a llama.cpp .gguf file, a PyTorch checkpoint (torch.save zip: \
        .bin/.pt/.pth), a folder of Meta consolidated.NN.pth shards with params.json, or a NumPy .npz/.npy file; the \
        format is read from the bytes, not the extension. PyTorch pickles are read by a restricted unpickler that never \
        executes anything: a pickle that would import anything beyond a plain state dict is reported as \
        "unsafe pickle: would import X" (exit 2). Without --stats only headers and pickles are read, so this is \
        instant even on multi-gigabyte models. With --stats every float tensor is decoded once.

        Examples:
          weightmark inspect model.safetensors
          weightmark inspect Llama-2-7b-hf/ --stats --json > stats.json
        """
    )

    @Argument(help: "Model file or folder.", completion: .file())
    var path: String

    @Flag(name: .long, help: "Also report mean, rms, max |w| and share of exact zeros per float tensor (reads all weights).")
    var stats = false

    @OptionGroup var output: OutputOptions

    func run() async throws {
        let source = try openTensorSource(path: path)
        if let gguf = source as? GGUFModel {
            try inspectGGUF(gguf)
            return
        }
        let bar = ProgressBar(total: source.sourceTensors.count, label: "reading", enabled: stats && !output.quiet)
        let report = try ModelInspection(source: source, statistics: stats) { _ in bar.advance() }
        bar.finish()
        if output.json {
            Console.out(try Console.json(report))
            return
        }
        Console.out("\(report.path): \(report.format), \(report.layout)")
        Console.out("  \(Console.count(report.tensorCount)) tensors, \(Console.count(report.parameters)) parameters, \(Console.bytes(report.tensorBytes)) of weights in \(Console.bytes(report.fileBytes)) of files")
        let mix = report.parametersByDType.sorted { $0.value > $1.value }.map { "\($0.key) \(Console.count($0.value))" }
        Console.out("  parameters by dtype: \(mix.joined(separator: ", "))")
        if !report.metadata.isEmpty {
            Console.out("  metadata: " + report.metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))
        }
        Console.out()
        var header = ["tensor", "dtype", "shape", "parameters", "bytes"]
        var right: Set<Int> = [3, 4]
        if report.files.count > 1 { header.append("file") }
        if stats { header += ["mean", "rms", "max |w|", "zeros"]; right.formUnion(header.count - 4..<header.count) }
        let rows = report.tensors.map { t -> [String] in
            var r = [t.name, t.dtype, "[" + t.shape.map(String.init).joined(separator: ", ") + "]",
                     Console.count(t.parameters), Console.bytes(t.bytes)]
            if report.files.count > 1 { r.append(t.file) }
            if stats {
                if let s = t.statistics {
                    r += [String(format: "%+.3e", s.mean), String(format: "%.3e", s.rms), String(format: "%.3e", s.maxAbs),
                          String(format: "%.2f%%", 100 * s.zeroFraction)]
                } else {
                    r += ["-", "-", "-", "-"]
                }
            }
            return r
        }
        Console.out(Console.table(header, rows, rightAligned: right))
    }

    struct GGUFReport: Codable {
        struct Tensor: Codable {
            var name: String, huggingFaceName: String, type: String, shape: [Int], parameters: Int, bytes: Int
            var statistics: TensorStatistics?
        }
        var path: String, format: String, version: Int, architecture: String?, tensorCount: Int, parameters: Int, tensorBytes: Int
        var metadata: [String: String]
        var tensors: [Tensor]
    }

    func inspectGGUF(_ model: GGUFModel) throws {
        let f = model.file
        var tensors: [GGUFReport.Tensor] = []
        for t in f.tensors {
            let hf = model.architecture?.hfName(forGGUF: t.name) ?? t.name
            var s: TensorStatistics?
            if stats, GGMLBlockCodec.supportedForDecoding.contains(t.type) { s = TensorStatistics(try f.floats(of: t)); f.release(t) }
            tensors.append(.init(name: t.name, huggingFaceName: hf, type: t.type.name, shape: t.shape, parameters: t.elementCount,
                                 bytes: t.byteCount, statistics: s))
        }
        var meta: [String: String] = [:]
        for (k, v) in f.metadata { meta[k] = v.summary }
        let report = GGUFReport(path: f.path, format: "gguf", version: Int(f.version), architecture: model.architecture?.rawValue,
                                tensorCount: tensors.count, parameters: tensors.reduce(0) { $0 + $1.parameters },
                                tensorBytes: tensors.reduce(0) { $0 + $1.bytes }, metadata: meta, tensors: tensors)
        if output.json { Console.out(try Console.json(report)); return }
        Console.out("\(report.path): GGUF v\(report.version), architecture \(report.architecture ?? "unknown")")
        Console.out("  \(Console.count(report.tensorCount)) tensors, \(Console.count(report.parameters)) parameters, \(Console.bytes(report.tensorBytes)) of tensor data")
        let types = Dictionary(grouping: tensors, by: \.type).map { "\($0.key) \($0.value.count)" }.sorted()
        Console.out("  types: \(types.joined(separator: ", "))")
        for (k, v) in f.metadata.prefix(40) { Console.out("  \(k) = \(v.summary)") }
        Console.out()
        var header = ["tensor", "Hugging Face name", "type", "shape", "bytes"]
        if stats { header += ["mean", "rms", "max |w|", "zeros"] }
        Console.out(Console.table(header, tensors.map { t in
            var r = [t.name, t.huggingFaceName, t.type, "[" + t.shape.map(String.init).joined(separator: ", ") + "]", Console.bytes(t.bytes)]
            if stats {
                r += t.statistics.map { [String(format: "%+.3e", $0.mean), String(format: "%.3e", $0.rms), String(format: "%.3e", $0.maxAbs),
                                         String(format: "%.2f%%", 100 * $0.zeroFraction)] } ?? ["-", "-", "-", "-"]
            }
            return r
        }, rightAligned: [4]))
    }
}

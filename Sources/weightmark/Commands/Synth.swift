import ArgumentParser
import Foundation
import Synthesis
import TensorIO

struct Synth: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a synthetic Llama-like model (tests, scale runs).",
        discussion: """
        Hugging Face names, shapes and config.json; deterministic from --seed, with realistic statistics \
        (heavy tails, per-row scale spread, 1/sqrt(fan_in), norms near 1). --params picks the layer count \
        for the size's defaults (2B: hidden 2048, ffn 5632; 7B: 4096 / 11008). Details: docs/CLI.md#synth.

        Example:
          weightmark synth --params 2B --dtype bf16 --shards 4 --out synth-2b/
        """
    )

    @Option(name: .long, help: ArgumentHelp("Approximate parameter count (2B, 500M, 125M, …).", valueName: "n"))
    var params: String = "125M"

    @Option(name: .long, help: ArgumentHelp("Storage type of every tensor.", valueName: "dtype"))
    var dtype: SynthDType = .bf16

    @Option(name: .long, help: ArgumentHelp("Number of shard files.", valueName: "n"))
    var shards: Int = 1

    @Option(name: .long, help: ArgumentHelp("Output folder.", valueName: "path"), completion: .directory)
    var out: String

    @Option(name: .long, help: "Hidden size (default by --params).") var hidden: Int?
    @Option(name: .long, help: "FFN size (default ≈ 2.7 × hidden).") var ffn: Int?
    @Option(name: .long, help: "Vocabulary size.") var vocab: Int = 32000
    @Option(name: .long, help: "Attention heads (default hidden / 128, ≥ 8).") var heads: Int?
    @Option(name: .long, help: "Key-value heads (≤ heads, divides heads).") var kvHeads: Int?
    @Option(name: .long, help: "Layers (overrides --params).") var layers: Int?
    @Option(name: .long, help: "Seed.") var seed: UInt64 = 1

    @Flag(name: .long, help: "Replace --out if it exists.")
    var force = false

    @OptionGroup var output: OutputOptions

    static func parseCount(_ s: String) -> Int? {
        let t = s.uppercased()
        let mult: Double = t.hasSuffix("B") ? 1e9 : t.hasSuffix("M") ? 1e6 : t.hasSuffix("K") ? 1e3 : 1
        let digits = mult == 1 ? t : String(t.dropLast())
        // Finite, and small enough that every size derived from it fits an Int (1e13 parameters is far beyond
        // anything this machine can write).
        guard let v = Double(digits), v.isFinite, v * mult >= 1, v * mult <= 1e13 else { return nil }
        return Int(v * mult)
    }

    func validate() throws {
        guard let n = Self.parseCount(params), n > 0 else { throw ValidationError("--params: use e.g. 2B, 500M or 125000000 (at most 1e13).") }
        for (flag, value) in [("--hidden", hidden), ("--ffn", ffn), ("--layers", layers), ("--heads", heads), ("--kv-heads", kvHeads), ("--vocab", vocab)] {
            if let value, !(1...1_048_576).contains(value) { throw ValidationError("\(flag) must be between 1 and 1,048,576.") }
        }
        guard (1...999).contains(shards) else { throw ValidationError("--shards must be between 1 and 999.") }
        let (hidden, _, heads) = dimensions
        let kv = kvHeads ?? heads
        guard heads > 0, hidden % heads == 0, (hidden / heads) % 2 == 0, kv > 0, heads % kv == 0 else {
            throw ValidationError("--heads must divide --hidden into even head sizes, and --kv-heads must divide --heads.")
        }
        _ = n
    }

    /// Hidden, FFN and head count: as given, or chosen from the requested size.
    var dimensions: (hidden: Int, ffn: Int, heads: Int) {
        let n = Self.parseCount(params) ?? 0
        let h = hidden ?? (n <= 200_000_000 ? 768 : n <= 600_000_000 ? 1024 : n <= 3_000_000_000 ? 2048 : 4096)
        let f = ffn ?? (h == 2048 ? 5632 : h == 4096 ? 11008 : (h * 8 / 3 + 255) / 256 * 256)
        return (h, f, heads ?? max(8, h / 128))
    }

    func run() async throws {
        let (hidden, ffn, heads) = dimensions
        var shape = LlamaShape.approximately(parameters: Self.parseCount(params)!, hidden: hidden, ffn: ffn, vocab: vocab,
                                             heads: heads, kvHeads: kvHeads ?? heads)
        if let layers { shape.layers = layers }
        if FileManager.default.fileExists(atPath: out) && !force { throw TensorIOError.outputExists(path: out) }
        let dtype = dtype.dtype
        let bytes = shape.parameterCount * dtype.bitCount / 8
        Console.note("synthesizing \(Console.count(shape.parameterCount)) parameters (\(shape.layers) layers, hidden \(shape.hidden), ffn \(shape.ffn), vocab \(shape.vocab)) as \(dtype.rawValue), \(Console.bytes(bytes)) in \(shards) shard(s)", quiet: output.quiet)
        let bar = ProgressBar(total: shape.tensors.count, label: "synth", enabled: !output.quiet)
        let start = Date()
        try SyntheticWeights.write(shape: shape, dtype: dtype, shards: shards, seed: seed, to: out, overwrite: force) { name in
            bar.advance(detail: name)
        }
        bar.finish()
        let seconds = Date().timeIntervalSince(start)
        if output.json {
            struct Result: Encodable { var output: String; var parameters: Int; var bytes: Int; var layers: Int; var seconds: Double }
            Console.out(try Console.json(Result(output: out, parameters: shape.parameterCount, bytes: bytes, layers: shape.layers,
                                                seconds: (seconds * 100).rounded() / 100)))
        } else {
            Console.out("wrote \(out): \(Console.count(shape.parameterCount)) parameters, \(Console.bytes(bytes)), \(shape.layers) layers, in \(String(format: "%.1f", seconds)) s (\(String(format: "%.0f", Double(bytes) / seconds / 1e6)) MB/s)")
        }
    }
}

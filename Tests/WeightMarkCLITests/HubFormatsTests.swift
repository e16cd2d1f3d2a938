import Foundation
import TensorIO
import Testing
import WeightMarkTestSupport

/// Leaked copies as the hub's quantizers write them, written by the real libraries (`Tests/Oracles/hub_quant.py`):
/// MLX affine through `mlx_lm.convert -q`, bitsandbytes NF4 (double-quantized) and LLM.int8 through transformers'
/// `save_pretrained`. A synthetic Llama with its config.json is marked with embed's defaults, quantized, and detected
/// with the owner key alone; each format's blind Z is held against the GGUF type of the same bit width written by
/// `convert`, as the [hub-formats] target states (≥ 0.85×).
@Suite("Hub quantized containers from the real libraries", .serialized,
       .enabled(if: Fixtures.oraclesAvailable, "Python oracle venv not installed (make venv)"))
struct HubFormatsTests {
    struct Work: Sendable {
        var dir: String
        var key: String
        var other: String
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    static let oracle = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Oracles/hub_quant.py").path

    static func must(_ arguments: [String]) throws {
        let r = try Fixtures.weightmark(arguments)
        guard r.status == 0 else { throw Failure(description: "weightmark \(arguments.joined(separator: " ")) exited \(r.status): \(r.stderr)") }
    }

    /// Built once: the original, the marked copy (release r1 in the key store), GGUF Q4_0 and Q8_0 of it, and each
    /// hub format of the marked copy and of the original.
    static let work: Result<Work, any Error> = Result {
        let python = try #require(Fixtures.python, "no Python oracle: run `make venv` or set WEIGHTMARK_PYTHON")
        let dir = Fixtures.temporaryDirectory("hub-formats")
        let key = dir + "/owner.key", other = dir + "/other.key"
        try must(["synth", "--params", "30M", "--hidden", "512", "--ffn", "1536", "--vocab", "4096", "--heads", "8", "--kv-heads", "2",
                  "--layers", "4", "--dtype", "f32", "--out", dir + "/original", "--quiet"])
        try must(["keygen", "--out", key, "--quiet"])
        try must(["keygen", "--out", other, "--quiet"])
        try must(["embed", dir + "/original", "--key", key, "--out", dir + "/marked", "--quiet"])
        // embed copies the folder's config.json, which the quantizers need.
        guard FileManager.default.fileExists(atPath: dir + "/marked/config.json") else { throw Failure(description: "embed did not keep config.json") }
        for type in ["Q4_0", "Q8_0"] {
            try must(["convert", dir + "/marked", "--to", "gguf", "--type", type, "--out", dir + "/marked-\(type).gguf", "--quiet"])
        }
        for source in ["marked", "original"] {
            _ = try Fixtures.run(python, [oracle, "mlx", dir + "/" + source, dir + "/\(source)-mlx4", "4", "64"])
            _ = try Fixtures.run(python, [oracle, "bnb4", dir + "/" + source, dir + "/\(source)-bnb4", "nf4"])
        }
        _ = try Fixtures.run(python, [oracle, "mlx", dir + "/marked", dir + "/marked-mlx8", "8", "64"])
        // MLX's microscaled modes: FP4/FP8 elements with power-of-two (E8M0) or E4M3 scales.
        for (mode, bits, group) in [("mxfp4", "4", "32"), ("nvfp4", "4", "16"), ("mxfp8", "8", "32")] {
            _ = try Fixtures.run(python, [oracle, "mlx", dir + "/marked", dir + "/marked-" + mode, bits, group, mode])
        }
        _ = try Fixtures.run(python, [oracle, "mlx", dir + "/original", dir + "/original-mxfp4", "4", "32", "mxfp4"])
        _ = try Fixtures.run(python, [oracle, "bnb8", dir + "/marked", dir + "/marked-bnb8"])
        for kind in ["gptq", "awq", "ct", "ct-asym", "ct-nvfp4", "ct-mxfp4", "gptq3", "awq-gemv"] {
            _ = try Fixtures.run(python, [oracle, kind, dir + "/marked", dir + "/marked-" + kind])
        }
        // HQQ as uploads carry it: compute dtype float16 (scales, zeros and every unquantized tensor in F16).
        _ = try Fixtures.run(python, [oracle, "hqq", dir + "/marked", dir + "/marked-hqq", "float16"])
        for kind in ["ct", "ct-nvfp4"] { _ = try Fixtures.run(python, [oracle, kind, dir + "/original", dir + "/original-" + kind]) }
        _ = try Fixtures.run(python, [oracle, "hqq", dir + "/original", dir + "/original-hqq", "float16"])
        return Work(dir: dir, key: key, other: other)
    }

    static func detect(_ path: String, key: String, extra: [String] = []) throws -> (status: Int32, report: [String: Any]) {
        let r = try Fixtures.weightmark(["detect", path, "--key", key, "--json", "--quiet"] + extra)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "\(path): \(r.stderr)")
        return (r.status, report)
    }

    @Test("each format is read in full and detected blind (≥ 0.85× the GGUF type of its bit width) and informed; another key is not detected; inspect names the format and bits",
          arguments: [("mlx4", "Q4_0", "MLX affine q4 g64"), ("mlx8", "Q8_0", "MLX affine q8 g64"),
                      ("bnb4", "Q4_0", "bitsandbytes NF4 (double-quantized) block 64"), ("bnb8", "Q8_0", "bitsandbytes LLM.int8"),
                      ("gptq", "Q4_0", "GPTQ int4"), ("awq", "Q4_0", "AWQ int4 g128"), ("ct", "Q4_0", "compressed-tensors pack-quantized int4 g128"),
                      ("mxfp4", "Q4_0", "MLX mxfp4 g32"), ("nvfp4", "Q4_0", "MLX nvfp4 g16"), ("mxfp8", "Q8_0", "MLX mxfp8 g32"),
                      ("ct-asym", "Q4_0", "compressed-tensors pack-quantized int4 g128 asymmetric"), ("ct-nvfp4", "Q4_0", "compressed-tensors NVFP4 g16"),
                      ("ct-mxfp4", "Q4_0", "compressed-tensors MXFP4 g32"), ("gptq3", "Q4_0", "GPTQ int3"), ("awq-gemv", "Q4_0", "AWQ gemv int4 g128"),
                      ("hqq", "Q4_0", "HQQ 4-bit g64")])
    func detected(format: String, gguf: String, storage: String) throws {
        let w = try Self.work.get()
        let path = w.dir + "/marked-" + format
        let ggufZ = try #require(try Self.detect(w.dir + "/marked-\(gguf).gguf", key: w.key).report["combinedZ"] as? Double)
        let blind = try Self.detect(path, key: w.key)
        let z = try #require(blind.report["combinedZ"] as? Double)
        print("hub format \(format): blind Z \(z), GGUF \(gguf) \(ggufZ), ratio \(z / ggufZ)")
        #expect(blind.status == 0, "\(format): \(blind.report["skipped"] ?? "")")
        #expect(z >= 0.85 * ggufZ, "\(format): blind Z \(z) < 0.85 × \(gguf)'s \(ggufZ)")
        #expect(((blind.report["coverage"] as? [String: Any])?["unreadTensors"] as? Int) == 0, "every candidate matrix is read")
        #expect(((blind.report["keySearch"] as? [String: Any])?["matched"] as? [String: Any])?["releaseId"] as? String == "r1")
        let informed = try Self.detect(path, key: w.key, extra: ["--reference", w.dir + "/original"])
        #expect(informed.status == 0)
        print("hub format \(format): informed Z \(informed.report["combinedZ"] ?? "")")
        #expect(try Self.detect(path, key: w.other).status == 1, "\(format): another key")
        let inspect = try Fixtures.weightmark(["inspect", path])
        #expect(inspect.status == 0 && inspect.stdout.contains(storage), "\(inspect.stdout.prefix(1500))")
    }

    @Test("the unmarked original, quantized by the same libraries, is not detected", arguments: ["mlx4", "bnb4", "ct", "mxfp4", "ct-nvfp4", "hqq"])
    func unmarked(format: String) throws {
        let w = try Self.work.get()
        let r = try Self.detect(w.dir + "/original-" + format, key: w.key)
        #expect(r.status == 1, "\(format): Z \(r.report["combinedZ"] ?? "")")
    }

    @Test("MLX decoding (affine, mxfp4, nvfp4, mxfp8) equals mx.dequantize of the same weight", arguments: ["mlx4", "mxfp4", "nvfp4", "mxfp8"])
    func mlxDequantizeMatches(format: String) throws {
        let w = try Self.work.get()
        let python = try #require(Fixtures.python)
        let name = "model.layers.1.mlp.up_proj.weight"
        let theirs = try JSONDecoder().decode([Float].self, from: Data(try Fixtures.run(python, [Self.oracle, "dequant-mlx", w.dir + "/marked-" + format, name]).utf8))
        let model = try openTensorSource(path: w.dir + "/marked-" + format)
        let ours = Array(try model.decodeFloats(named: name).prefix(64))
        #expect(ours.count == 64 && zip(ours, theirs).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) }, "ours \(ours.prefix(4)) theirs \(theirs.prefix(4))")
    }

    @Test("GPTQ, AWQ, compressed-tensors and HQQ decoding equals what the format stands for (the quantizer's own values; the library's decompress for compressed-tensors, HQQLinear.dequantize for HQQ)",
          arguments: ["gptq", "awq", "ct", "ct-asym", "ct-nvfp4", "ct-mxfp4", "gptq3", "awq-gemv", "hqq"])
    func packedDecodingMatches(kind: String) throws {
        let w = try Self.work.get()
        let python = try #require(Fixtures.python)
        let name = "model.layers.1.mlp.up_proj.weight"
        let theirs = try JSONDecoder().decode([Float].self, from: Data(try Fixtures.run(python, [Self.oracle, "dequant-ref", kind, w.dir + "/marked", w.dir + "/marked-" + kind, name]).utf8))
        let model = try openTensorSource(path: w.dir + "/marked-" + kind)
        #expect(model.sourceTensor(named: name)?.shape == [1536, 512])
        let ours = Array(try model.decodeFloats(named: name).prefix(64))
        #expect(ours.count == 64 && zip(ours, theirs).allSatisfy { abs($0 - $1) <= 1e-3 * max(1e-3, abs($1)) }, "ours \(ours.prefix(6)) theirs \(theirs.prefix(6))")
    }
}

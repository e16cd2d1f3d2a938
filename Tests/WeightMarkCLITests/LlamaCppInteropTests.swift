import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// The real llama.cpp (llama-cpp-python, built from source by `make test`) as the oracle for GGUF: files
/// `convert` writes load and run in it, and marks survive its own quantizer, read back by `detect` exactly
/// as the PyPI `gguf` package decodes them.
@Suite("llama.cpp interop: convert, quantize, detect", .serialized,
       .enabled(if: Fixtures.llamaCppAvailable && Fixtures.miniLMAvailable, "llama-cpp-python or MiniLM not installed"))
struct LlamaCppInteropTests {
    /// A marked MiniLM (and its key), and F16 GGUFs of the marked and the original model, made once.
    struct Setup: Sendable {
        var dir: String
        var original: String
        var marked: String
        var key: String
        var markedF16: String
        var originalF16: String
    }

    static let setup: Result<Setup, any Error> = Result {
        let dir = Fixtures.temporaryDirectory("llamacpp")
        let original = ((Fixtures.miniLM ?? "") as NSString).deletingLastPathComponent
        let s = Setup(dir: dir, original: original, marked: dir + "/marked", key: dir + "/owner.key",
                      markedF16: dir + "/marked-F16.gguf", originalF16: dir + "/original-F16.gguf")
        try cli(["keygen", "--out", s.key])
        try cli(["embed", original, "--key", s.key, "--out", s.marked, "--no-release"])
        try cli(["convert", s.marked, "--type", "F16", "--out", s.markedF16])
        try cli(["convert", original, "--type", "F16", "--out", s.originalF16])
        return s
    }

    @discardableResult
    static func cli(_ arguments: [String], allowing statuses: Set<Int32> = [0]) throws -> String {
        let r = try Fixtures.weightmark(arguments)
        guard statuses.contains(r.status) else {
            throw CommandFailure(description: "weightmark \(arguments.joined(separator: " ")) exited \(r.status): \(r.stderr)")
        }
        return r.stdout
    }

    struct CommandFailure: Error, CustomStringConvertible { var description: String }

    struct Verdict { var z: Double; var detected: Bool; var tensors: Int; var skipped: [String] }

    static func detect(_ path: String, key: String, reference: String? = nil) throws -> Verdict {
        let out = try cli(["detect", path, "--key", key, "--json"] + (reference.map { ["--reference", $0] } ?? []), allowing: [0, 1])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
        return Verdict(z: try #require(json["combinedZ"] as? Double), detected: try #require(json["detected"] as? Bool),
                       tensors: (json["tensors"] as? [Any])?.count ?? 0,
                       skipped: ((json["skipped"] as? [[String: Any]]) ?? []).compactMap { $0["name"] as? String })
    }

    @Test("convert output loads in llama.cpp, tokenizes as BERT does, and embeds like a numpy forward pass",
          arguments: [("F16", 0.9999), ("Q8_0", 0.999), ("Q4_K", 0.98)])
    func bertLoadsAndRuns(type: String, minimumCosine: Double) throws {
        let s = try Self.setup.get()
        let path = s.dir + "/original-\(type).gguf"
        if !FileManager.default.fileExists(atPath: path) { try Self.cli(["convert", s.original, "--type", type, "--out", path]) }
        let r = try Fixtures.llamaOracle(["bert-compare", path, s.original])
        #expect(r["tokens_equal"] as? Bool == true, "llama.cpp's WordPiece tokens differ from BERT's")
        let cosine = try #require(r["min_cosine"] as? Double)
        #expect(cosine >= minimumCosine, "\(type): worst sentence cosine \(cosine) < \(minimumCosine)")
    }

    @Test("a synthetic Llama converted to GGUF runs in llama.cpp with the logits of a numpy forward pass",
          arguments: [("F16", 0.9999), ("Q8_0", 0.998), ("Q4_K", 0.9)])
    func llamaLoadsAndRuns(type: String, minimumCosine: Double) throws {
        let s = try Self.setup.get()
        let model = s.dir + "/synth-llama"
        if !FileManager.default.fileExists(atPath: model) {
            try Self.cli(["synth", "--params", "5M", "--hidden", "256", "--ffn", "512", "--vocab", "1000", "--dtype", "f32", "--out", model])
        }
        let path = s.dir + "/synth-\(type).gguf"
        try Self.cli(["convert", model, "--type", type, "--out", path, "--force"])
        let r = try Fixtures.llamaOracle(["llama-compare", path, model])
        #expect(r["finite"] as? Bool == true)
        #expect(r["argmax_equal"] as? Bool == true, "\(type): llama.cpp's top token differs from numpy's")
        let cosine = try #require(r["cosine"] as? Double)
        #expect(cosine >= minimumCosine, "\(type): logits cosine \(cosine) < \(minimumCosine)")
    }

    /// llama.cpp's quantizer presets and `--token-embedding-type` variants; IQ2_XS needs an importance matrix.
    static let quantizations: [(ftype: String, tokenEmbedding: String?, imatrix: Bool)] = [
        ("Q4_K_M", nil, false), ("Q5_K_M", nil, false), ("Q3_K_M", nil, false), ("Q2_K", nil, false),
        ("IQ4_NL", nil, false), ("IQ4_XS", nil, false), ("IQ3_S", nil, false), ("IQ2_XS", nil, true),
        ("IQ4_NL", "IQ4_NL", false), ("Q4_K_M", "Q4_0", false),
    ]

    @Test("marked MiniLM through llama.cpp's quantizer: detected blind and informed, Z as gguf-py's decoding gives",
          arguments: quantizations.indices)
    func markSurvivesLlamaQuantizer(_ index: Int) throws {
        let (ftype, tokenEmbedding, imatrix) = Self.quantizations[index]
        let s = try Self.setup.get()
        let label = ftype + (tokenEmbedding.map { "-te-\($0)" } ?? "")
        let quantized = s.dir + "/marked-\(label).gguf"
        var args = ["quantize", s.markedF16, quantized, ftype]
        if let tokenEmbedding { args += ["--token-embedding-type", tokenEmbedding] }
        if imatrix { args += ["--imatrix", s.marked] }
        #expect(try Fixtures.llamaOracle(args)["rc"] as? Int == 0)
        let decoded = s.dir + "/marked-\(label)-gguf-py.gguf"
        _ = try Fixtures.llamaOracle(["decode", quantized, decoded])

        let blind = try Self.detect(quantized, key: s.key)
        let informed = try Self.detect(quantized, key: s.key, reference: s.original)
        let blindPy = try Self.detect(decoded, key: s.key)
        let informedPy = try Self.detect(decoded, key: s.key, reference: s.original)
        print("llama.cpp \(label): blind Z \(blind.z) (gguf-py \(blindPy.z)), informed Z \(informed.z) (gguf-py \(informedPy.z)), \(blind.tensors) tensors")
        #expect(blind.detected && informed.detected, "\(label): blind \(blind.z), informed \(informed.z)")
        // Only the pooler, which llama.cpp's converter drops (and `convert` with it), is missing against the original.
        #expect(blind.skipped.isEmpty, "\(label): skipped \(blind.skipped)")
        #expect(informed.skipped == ["pooler.dense.weight"], "\(label): skipped \(informed.skipped)")
        #expect(blind.tensors == blindPy.tensors && blind.tensors > 0)
        #expect(abs(blind.z - blindPy.z) <= 0.01 * abs(blindPy.z), "\(label): blind \(blind.z) vs gguf-py \(blindPy.z)")
        #expect(abs(informed.z - informedPy.z) <= 0.01 * abs(informedPy.z), "\(label): informed \(informed.z) vs gguf-py \(informedPy.z)")
    }

    @Test("unmarked MiniLM through llama.cpp's quantizer is not detected", arguments: ["Q4_K_M", "IQ4_NL"])
    func unmarkedNotDetected(_ ftype: String) throws {
        let s = try Self.setup.get()
        let quantized = s.dir + "/original-\(ftype).gguf"
        #expect(try Fixtures.llamaOracle(["quantize", s.originalF16, quantized, ftype])["rc"] as? Int == 0)
        let blind = try Self.detect(quantized, key: s.key)
        #expect(!blind.detected, "\(ftype): unmarked model detected with Z \(blind.z)")
        #expect(blind.tensors > 0 && blind.skipped.isEmpty)
    }
}

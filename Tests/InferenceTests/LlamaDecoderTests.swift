import Alignment
import Foundation
import Inference
import LinearAlgebra
import Robustness
import Synthesis
import TensorIO
import Testing
import Watermarking
import WeightMarkTestSupport

@Suite("Llama forward pass (function kept) against an independent float64 numpy forward pass")
struct LlamaDecoderTests {
    /// Small models covering what the forward pass reads from config.json and the checkpoint.
    enum Fixture: String, CaseIterable, CustomTestStringConvertible {
        /// `synth` output as written: GQA (8 heads, 2 key/value heads), rope_theta 10000, ε 1e-5, separate lm_head.
        case synth
        /// `synth` output in two shards with an edited config: rope_theta 100, ε 0.01, tie_word_embeddings (the stored
        /// lm_head must then be ignored, as transformers ties it to the embedding).
        case tiedEditedConfig
        /// head_dim 32 set in config.json with hidden 96 and 4 heads (q projects to 128), q/k/v/o and MLP biases.
        case explicitHeadDimAndBiases
        var testDescription: String { rawValue }
    }

    static let shape = LlamaShape(hidden: 128, layers: 2, ffn: 352, vocab: 512, heads: 8, kvHeads: 2)

    /// Writes the fixture's model folder; returns it.
    static func write(_ fixture: Fixture, in dir: String) throws -> String {
        let folder = dir + "/" + fixture.rawValue
        switch fixture {
        case .synth:
            try SyntheticWeights.write(shape: shape, dtype: .f32, shards: 1, seed: 7, to: folder, overwrite: false)
        case .tiedEditedConfig:
            try SyntheticWeights.write(shape: shape, dtype: .bf16, shards: 2, seed: 8, to: folder, overwrite: false)
            var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/config.json"))) as? [String: Any])
            config["rope_theta"] = 100.0
            config["rms_norm_eps"] = 0.01
            config["tie_word_embeddings"] = true
            try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: folder + "/config.json"))
        case .explicitHeadDimAndBiases:
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            let (d, heads, kv, hd, ffn, vocab) = (96, 4, 2, 32, 160, 300)
            var shapes: [(String, [Int])] = [("model.embed_tokens.weight", [vocab, d]), ("model.norm.weight", [d]), ("lm_head.weight", [vocab, d])]
            for l in 0..<2 {
                let p = "model.layers.\(l)."
                shapes += [(p + "input_layernorm.weight", [d]), (p + "post_attention_layernorm.weight", [d]),
                           (p + "self_attn.q_proj.weight", [heads * hd, d]), (p + "self_attn.q_proj.bias", [heads * hd]),
                           (p + "self_attn.k_proj.weight", [kv * hd, d]), (p + "self_attn.k_proj.bias", [kv * hd]),
                           (p + "self_attn.v_proj.weight", [kv * hd, d]), (p + "self_attn.v_proj.bias", [kv * hd]),
                           (p + "self_attn.o_proj.weight", [d, heads * hd]), (p + "self_attn.o_proj.bias", [d]),
                           (p + "mlp.gate_proj.weight", [ffn, d]), (p + "mlp.gate_proj.bias", [ffn]),
                           (p + "mlp.up_proj.weight", [ffn, d]), (p + "mlp.up_proj.bias", [ffn]),
                           (p + "mlp.down_proj.weight", [d, ffn]), (p + "mlp.down_proj.bias", [d])]
            }
            // The synthetic generator's statistics (norm weights 1 + 0.05 z); biases are centred to 0.05 z.
            let tensors = shapes.map { name, shape in
                var bytes = SyntheticWeights.bytes(name: name, shape: shape, dtype: .f32, seed: 9)
                if name.hasSuffix(".bias") {
                    let v = bytes.withUnsafeBytes { FloatConversion.decode($0, dtype: .f32) }.map { $0 - 1 }
                    bytes = FloatConversion.encode(v, as: .f32)
                }
                return OutputTensor(name: name, dtype: .f32, shape: shape, bytes: bytes)
            }
            try SafetensorsWriter.write(tensors, metadata: [("format", "pt")], to: folder + "/model.safetensors", overwrite: false)
            let config = """
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": \(d), "intermediate_size": \(ffn),
             "num_attention_heads": \(heads), "num_key_value_heads": \(kv), "head_dim": \(hd), "num_hidden_layers": 2,
             "vocab_size": \(vocab), "rms_norm_eps": 1e-06, "rope_theta": 500000.0, "attention_bias": true, "mlp_bias": true,
             "hidden_act": "silu", "rope_scaling": null}
            """
            Fixtures.write(Array(config.utf8), to: folder + "/config.json")
        }
        return folder
    }

    @Test("logits at every position of the probe sequences match the numpy oracle: max |Δ| ≤ 1e-4 × max |logit|",
          .enabled(if: Fixtures.oraclesAvailable), arguments: Fixture.allCases)
    func matchesOracle(_ fixture: Fixture) throws {
        let dir = Fixtures.temporaryDirectory("llama-logits")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let folder = try Self.write(fixture, in: dir)
        let config = try #require(try LlamaConfig.load(near: folder))
        let decoder = try LlamaDecoder(source: try SafetensorsModel(path: folder), config: config)
        let sequences = ProbeTokens.sequences(vocabulary: decoder.vocabulary)
        let json = String(decoding: try JSONEncoder().encode(sequences), as: UTF8.self)
        let out = try Fixtures.run(try #require(Fixtures.python, "no Python oracle: run `make venv`"),
                                   [Fixtures.packageRoot + "/scripts/oracles/llama_logits.py", folder, json])
        let expected = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[[Double]]])
        #expect(expected.count == sequences.count)
        var worst = 0.0, largest = 0.0
        for (s, tokens) in sequences.enumerated() {
            let logits = decoder.logits(tokens: tokens)
            #expect(logits.rows == tokens.count && expected[s].count == tokens.count && expected[s].allSatisfy { $0.count == logits.cols })
            for t in 0..<logits.rows {
                for j in 0..<logits.cols {
                    worst = max(worst, abs(Double(logits[t, j]) - expected[s][t][j]))
                    largest = max(largest, abs(expected[s][t][j]))
                }
            }
        }
        print("llama logits \(fixture.rawValue): max |Δ| \(worst), max |logit| \(largest), relative \(worst / largest)")
        #expect(largest > 0.5, "degenerate logits")
        #expect(worst <= 1e-4 * largest, "max |Δ| = \(worst), largest |logit| = \(largest)")
    }

    @Test("config.json: defaults, GQA, and a clear error for what the forward pass does not implement")
    func configParsing() throws {
        let plain = try #require(try LlamaConfig.parse(["model_type": "llama", "num_attention_heads": 32], path: "c.json"))
        #expect(plain == LlamaConfig(heads: 32, kvHeads: 32, headDim: nil, rmsNormEpsilon: 1e-6, ropeTheta: 10000, tiedEmbeddings: false))
        #expect(try LlamaConfig.parse(["model_type": "bert", "num_attention_heads": 12], path: "c.json") == nil)
        for (field, value, words) in [("rope_scaling", ["rope_type": "llama3"] as Any, "not implemented"), ("hidden_act", "gelu" as Any, "silu"),
                                      ("num_key_value_heads", 3 as Any, "does not divide")] {
            var object: [String: Any] = ["model_type": "llama", "num_attention_heads": 32]
            object[field] = value
            #expect { _ = try LlamaConfig.parse(object, path: "m/config.json") } throws: { error in
                "\(error)".contains("m/config.json") && "\(error)".contains(field) && "\(error)".contains(words)
            }
        }
    }

    @Test("through the bench sweep: function-preserving edits keep the logits (min cos > 0.99999, top-1 100%), int4 visibly does not")
    func sweepFunctionKept() async throws {
        let dir = Fixtures.temporaryDirectory("llama-function")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let shape = LlamaShape(hidden: 256, layers: 2, ffn: 512, vocab: 1024, heads: 8, kvHeads: 2)
        try SyntheticWeights.write(shape: shape, dtype: .f32, shards: 1, seed: 12, to: dir + "/m", overwrite: false)
        let original = try SafetensorsModel(path: dir + "/m")
        let key = WatermarkKey(secret: (0..<32).map { UInt8(($0 * 29 + 5) & 0xFF) })
        let plan = try Embedder.plan(original, options: EmbedOptions())
        _ = try Embedder.embed(original, key: key, options: EmbedOptions(), plan: plan, to: dir + "/marked.safetensors", overwrite: false)
        let config = ModelConfig.load(near: dir + "/m")
        let llama = try LlamaConfig.load(near: dir + "/m")
        let families = [SweepFamily(name: "none", axis: "-", points: [(0, "none", "")]),
                        SweepFamily(name: "int-k", axis: "bits", points: [(4, "int4 g128", "int4:group=128")])]
            + SweepFamily.derivatives(layout: TransformerLayout.recognize(names: original.tensors.map(\.name), config: config))
        let runner = try SweepRunner(original: original, marked: try SafetensorsModel(path: dir + "/marked.safetensors"), key: key,
                                     options: DetectOptions(), delta: plan.delta, config: config, llama: llama)
        #expect(runner.functionProbe == .llama(try #require(llama)))
        runner.alignment = nil // function kept does not depend on alignment; skipping it keeps the test short
        let points = try await runner.run(families)
        #expect(points.count == 9)
        for p in points {
            let lo = try #require(p.functionMinCosine, "\(p.label): no function kept")
            let top1 = try #require(p.functionTop1Agreement, "\(p.label): no top-1 agreement")
            print("llama function kept \(p.label): min cos \(lo), mean \(p.functionMeanCosine ?? .nan), top-1 \(top1)")
            if p.spec.contains("int4") {
                #expect(lo < 0.999 && top1 < 1, "\(p.label): int4 kept min cos \(lo), top-1 \(top1)")
            } else {
                #expect(lo > 0.99999 && top1 == 1, "\(p.label): a function-preserving edit kept min cos \(lo), top-1 \(top1)")
            }
        }
        #expect(SweepRendering.rows(points)[0][3].contains("top-1 100.0%"))
    }

    @Test("weightmark attack --json reports functionKept for a Llama with its config.json, and says why when the config does not fit")
    func attackCommand() throws {
        let dir = Fixtures.temporaryDirectory("llama-attack-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try SyntheticWeights.write(shape: Self.shape, dtype: .f32, shards: 1, seed: 13, to: dir + "/m", overwrite: false)
        for (spec, preserving) in [("rotate,permute-heads:heads=8,kv=2", true), ("int4:group=64", false)] {
            let r = try Fixtures.weightmark(["attack", dir + "/m", "--out", dir + "/a-\(preserving)", "--attack", spec, "--json", "--quiet"])
            #expect(r.status == 0, "\(r.stderr)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let kept = try #require(object["functionKept"] as? [String: Any], "no functionKept in \(r.stdout.prefix(400))")
            let lo = try #require(kept["minCosine"] as? Double), top1 = try #require(kept["top1Agreement"] as? Double)
            #expect(kept["sentences"] as? Int == ProbeTokens.lengths.count)
            #expect(preserving ? lo > 0.99999 && top1 == 1 : lo < 0.9999, "\(spec): min cos \(lo), top-1 \(top1)")
        }
        // A config.json the weights do not fit: the attack is still written, function kept is not measured, and the
        // note names the tensor and the file.
        let configPath = dir + "/m/config.json"
        var config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configPath))) as? [String: Any])
        config["num_attention_heads"] = 16
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: configPath))
        let r = try Fixtures.weightmark(["attack", dir + "/m", "--out", dir + "/a-misfit", "--attack", "int8", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("function kept not measured") && r.stderr.contains("k_proj.weight") && r.stderr.contains(dir + "/m"), "\(r.stderr)")
        #expect(!r.stdout.contains("functionKept"))
    }
}

import Conversion
import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// What `convert` writes besides the weights, in the form llama.cpp's loader requires.
@Suite("convert: tokenizer metadata and F32 tensors for llama.cpp")
struct GGUFConverterTokenizerTests {
    func strings(_ v: GGUFValue?) -> [String] {
        guard case let .array(_, values)? = v else { return [] }
        return values.compactMap(\.string)
    }
    func ints(_ v: GGUFValue?) -> [Int] {
        guard case let .array(_, values)? = v else { return [] }
        return values.compactMap(\.integer)
    }

    @Test("MiniLM: WordPiece in llama.cpp's form, specials CONTROL, token_type_count, embeddings that stay F32",
          .enabled(if: Fixtures.miniLMAvailable, "MiniLM not fetched"))
    func bertVocabulary() throws {
        let dir = Fixtures.temporaryDirectory("conv-bert")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let model = try SafetensorsModel(path: try #require(Fixtures.miniLM))
        let report = try GGUFConverter.convert(model, type: .q8_0, to: dir + "/m.gguf", overwrite: false)
        #expect(report.tokenizer.contains("WordPiece"))
        let f = try GGUFFile(path: dir + "/m.gguf")
        #expect(f.value("tokenizer.ggml.token_type_count") == .uint32(2))
        #expect(f.value("tokenizer.ggml.model") == .string("bert"))
        let tokens = strings(f.value("tokenizer.ggml.tokens")), types = ints(f.value("tokenizer.ggml.token_type"))
        #expect(tokens.count == 30522 && types.count == 30522)
        #expect(Array(tokens[100...103]) == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] && Array(types[100...103]) == [3, 3, 3, 3])
        #expect(tokens[0] == "[PAD]" && types[0] == 3)
        #expect(tokens[1996] == "\u{2581}the" && types[1996] == 1)   // "the": a word start gets the phantom space
        #expect(tokens[2015] == "s" && types[2015] == 1)             // "##s": a continuation loses its "##"
        #expect(f.value("tokenizer.ggml.bos_token_id") == .uint32(101) && f.value("tokenizer.ggml.seperator_token_id") == .uint32(102))
        for name in ["position_embd.weight", "token_types.weight", "token_embd_norm.weight", "blk.0.attn_output_norm.weight"] {
            #expect(f.tensor(named: name)?.type == .f32, "\(name)")
        }
        #expect(f.tensor(named: "token_embd.weight")?.type == .q8_0)
    }

    @Test("a Llama without a tokenizer gets a byte-level SentencePiece placeholder of its vocabulary size")
    func llamaPlaceholder() throws {
        let dir = Fixtures.temporaryDirectory("conv-llama")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallLlama(to: dir + "/llama")
        let report = try GGUFConverter.convert(try SafetensorsModel(path: dir + "/llama"), type: .f16, to: dir + "/l.gguf", overwrite: false)
        #expect(report.tokenizer.contains("placeholder"))
        let f = try GGUFFile(path: dir + "/l.gguf")
        #expect(f.value("tokenizer.ggml.model") == .string("llama"))
        let tokens = strings(f.value("tokenizer.ggml.tokens")), types = ints(f.value("tokenizer.ggml.token_type"))
        #expect(tokens.count == 1000 && types.count == 1000)
        #expect(Array(tokens[0...3]) == ["<unk>", "<s>", "</s>", "<0x00>"] && tokens[258] == "<0xFF>")
        #expect(Array(types[0...3]) == [2, 3, 3, 6] && types[999] == 5)
        #expect(f.value("llama.vocab_size") == .uint32(1000))
    }

    @Test("a config.json hyperparameter of zero is an error naming it, not a crash")
    func zeroHeads() throws {
        let dir = Fixtures.temporaryDirectory("conv-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallLlama(to: dir + "/llama")
        let config = dir + "/llama/config.json"
        let text = try String(contentsOfFile: config, encoding: .utf8).replacingOccurrences(of: "\"num_attention_heads\": 8", with: "\"num_attention_heads\": 0")
        try text.write(toFile: config, atomically: true, encoding: .utf8)
        #expect {
            try GGUFConverter.convert(try SafetensorsModel(path: dir + "/llama"), type: .f16, to: dir + "/l.gguf", overwrite: false)
        } throws: { error in
            "\(error)".contains("num_attention_heads = 0")
        }
    }
}

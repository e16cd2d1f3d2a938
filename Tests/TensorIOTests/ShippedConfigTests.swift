import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// The head size detection reads from a config shipped next to the weights: untrusted, so anything odd is "unknown".
@Suite("Model config: attention head size")
struct ShippedConfigTests {
    func headSize(config: String?, params: String? = nil, file: Bool = true) -> Int? {
        let dir = Fixtures.temporaryDirectory("model-config")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        Fixtures.write([0], to: dir + "/model.safetensors")
        if let config { Fixtures.write(Array(config.utf8), to: dir + "/config.json") }
        if let params { Fixtures.write(Array(params.utf8), to: dir + "/params.json") }
        return ShippedConfig.attentionHeadSize(near: file ? dir + "/model.safetensors" : dir)
    }

    @Test("head_dim, hidden ÷ heads under each framework's keys, and Meta's params.json")
    func readsEachConvention() {
        #expect(headSize(config: #"{"hidden_size": 4096, "num_attention_heads": 32}"#) == 128)
        #expect(headSize(config: #"{"hidden_size": 4096, "num_attention_heads": 32, "head_dim": 64}"#, file: false) == 64)
        #expect(headSize(config: #"{"n_embd": 768, "n_head": 12}"#) == 64)
        #expect(headSize(config: #"{"d_model": 2560, "n_heads": 32}"#) == 80)
        #expect(headSize(config: nil, params: #"{"dim": 4096, "n_heads": 32, "n_layers": 32}"#) == 128)
        #expect(headSize(config: #"{"model_type": "bert"}"#, params: #"{"dim": 2048, "n_heads": 16}"#) == 128)
    }

    @Test("missing, malformed, zero, fractional, inexact, odd, out-of-range or oversized values are unknown")
    func rejectsWhatItCannotTrust() {
        #expect(headSize(config: nil) == nil)
        #expect(headSize(config: "not json") == nil)
        #expect(headSize(config: "[1, 2]") == nil)
        #expect(headSize(config: #"{"hidden_size": 4096, "num_attention_heads": 0}"#) == nil)
        #expect(headSize(config: #"{"hidden_size": 4096.5, "num_attention_heads": 32}"#) == nil)
        #expect(headSize(config: #"{"hidden_size": "4096", "num_attention_heads": 32}"#) == nil)
        #expect(headSize(config: #"{"hidden_size": 4096, "num_attention_heads": 30}"#) == nil)
        #expect(headSize(config: #"{"head_dim": 81}"#) == nil)
        #expect(headSize(config: #"{"head_dim": 8}"#) == nil)
        #expect(headSize(config: #"{"head_dim": 4096}"#) == nil)
        #expect(headSize(config: #"{"hidden_size": -4096, "num_attention_heads": -32}"#) == nil)
        #expect(headSize(config: #"{"head_dim": 128, "pad": ""# + String(repeating: "x", count: 1 << 20) + #""}"#) == nil)
        #expect(ShippedConfig.attentionHeadSize(near: "/nonexistent/model.safetensors") == nil)
    }
}

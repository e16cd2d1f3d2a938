import Alignment
import Foundation
import Inference
import TensorIO
import Testing
import WeightMarkTestSupport

@Suite("BERT forward pass (function kept) against an independent numpy forward pass")
struct BertEncoderTests {
    @Test("MiniLM sentence embeddings match the numpy oracle to 1e-4 on the probe sentences", .enabled(if: Fixtures.miniLMAvailable && Fixtures.oraclesAvailable))
    func matchesOracle() throws {
        let path = try #require(Fixtures.miniLM, "MiniLM missing: run `make model` (or set WEIGHTMARK_MINILM)")
        let model = try SafetensorsModel(path: path)
        let heads = try #require(ModelConfig.load(near: path)?.heads)
        let encoder = try BertEncoder(source: model, heads: heads)
        let ids = ProbeSentences.uncasedBERT
        let json = String(decoding: try JSONEncoder().encode(ids), as: UTF8.self)
        let out = try Fixtures.run(try #require(Fixtures.python, "no Python oracle: run `make venv`"),
                                   [Fixtures.packageRoot + "/scripts/oracles/bert_embeddings.py", path, String(heads), json])
        let expected = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[Double]])
        #expect(expected.count == ids.count)
        var worst = 0.0
        for (k, sentence) in ids.enumerated() {
            let e = encoder.embed(tokens: sentence)
            #expect(e.count == 384 && expected[k].count == 384)
            for j in e.indices { worst = max(worst, abs(Double(e[j]) - expected[k][j])) }
        }
        #expect(worst <= 1e-4, "max |Δ| = \(worst)")
        // Same model → cosine 1; a function-preserving permutation changes nothing either.
        let kept = FunctionKept(reference: ids.map(encoder.embed), attacked: ids.map(encoder.embed))
        #expect(kept.minCosine > 0.999999)
    }
}

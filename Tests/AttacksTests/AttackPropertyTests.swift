import Foundation
import Testing
import Attacks
import LinearAlgebra
import TensorIO
import WeightMarkTestSupport

private func apply(_ spec: String, _ values: [Float], shape: [Int], name: String = "w", context: AttackContext = AttackContext()) throws -> [Float] {
    var v = values
    for a in try AttackCatalog.chain(spec) { try a.apply(name: name, shape: shape, values: &v, context: context) }
    return v
}

@Suite("Attack properties")
struct AttackPropertyTests {
    let w = Fixtures.floats(count: 64 * 256, seed: 5, scale: 0.05)
    let shape = [64, 256]

    @Test("magnitude pruning zeros exactly the requested share, the smallest weights", arguments: [0.1, 0.5, 0.9])
    func magnitudePruning(_ fraction: Double) throws {
        let out = try apply("prune:fraction=\(fraction)", w, shape: shape)
        let zeros = out.filter { $0 == 0 }.count
        #expect(zeros == Int((fraction * Double(w.count)).rounded()))
        let keptMin = out.filter { $0 != 0 }.map(abs).min()!
        let prunedMax = zip(w, out).filter { $0.1 == 0 }.map { abs($0.0) }.max()!
        #expect(prunedMax <= keptMin)
        for (a, b) in zip(w, out) where b != 0 { #expect(a == b) }
    }

    @Test("random and structured pruning hit their share; 2:4 keeps the 2 largest of every 4")
    func structured() throws {
        let r = try apply("prune:fraction=0.3,mode=random,seed=9", w, shape: shape)
        #expect(r.filter { $0 == 0 }.count == Int((0.3 * Double(w.count)).rounded()))
        #expect(try apply("prune:fraction=0.3,mode=random,seed=9", w, shape: shape) == r)
        #expect(try apply("prune:fraction=0.3,mode=random,seed=10", w, shape: shape) != r)
        let rows = try apply("prune:fraction=0.25,mode=rows", w, shape: shape)
        let zeroRows = (0..<64).filter { i in (0..<256).allSatisfy { rows[i * 256 + $0] == 0 } }
        #expect(zeroRows.count == 16)
        let cols = try apply("prune:fraction=0.5,mode=columns", w, shape: shape)
        #expect((0..<256).filter { j in (0..<64).allSatisfy { cols[$0 * 256 + j] == 0 } }.count == 128)

        let nm = try apply("nm:n=2,m=4", w, shape: shape)
        for g in stride(from: 0, to: w.count, by: 4) {
            let group = Array(nm[g..<(g + 4)]), orig = Array(w[g..<(g + 4)])
            #expect(group.filter { $0 != 0 }.count == 2)
            let keptMin = zip(orig, group).filter { $0.1 != 0 }.map { abs($0.0) }.min()!
            let droppedMax = zip(orig, group).filter { $0.1 == 0 }.map { abs($0.0) }.max()!
            #expect(droppedMax <= keptMin)
        }
    }

    @Test("int8 per-channel values lie on each row's grid; int-k group values take at most 2^k levels per group")
    func integerGrids() throws {
        let q8 = try apply("int8", w, shape: shape)
        for i in 0..<64 {
            let row = Array(w[(i * 256)..<((i + 1) * 256)])
            let s = row.map(abs).max()! / 127
            for v in q8[(i * 256)..<((i + 1) * 256)] {
                let k = v / s
                #expect(abs(k - k.rounded()) < 1e-3 && abs(k) <= 127.001)
            }
        }
        for bits in [2, 4] {
            let q = try apply("int\(bits):group=64", w, shape: shape)
            for g in stride(from: 0, to: w.count, by: 64) {
                #expect(Set(q[g..<(g + 64)]).count <= 1 << bits)
            }
            let err = zip(q, w).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
            let norm = w.reduce(0.0) { $0 + Double($1) * Double($1) }
            #expect((err / norm).squareRoot() < (bits == 4 ? 0.15 : 0.7))
        }
    }

    @Test("NF4 values are codebook entries times each block's absmax")
    func nf4() throws {
        let q = try apply("nf4", w, shape: shape)
        for b in stride(from: 0, to: w.count, by: 64) {
            let absmax = w[b..<(b + 64)].map(abs).max()!
            for v in q[b..<(b + 64)] {
                #expect(NF4Quantization.codebook.contains { abs($0 * absmax - v) <= 1e-6 * absmax })
            }
        }
    }

    @Test("casts land on the target grid and keep their storage dtype")
    func casts() throws {
        let h = try apply("fp16", w, shape: shape)
        #expect(zip(h, w).allSatisfy { $0.0 == Float(Float16($0.1)) })
        #expect(try AttackCatalog.chain("fp16")[0].outputDType(for: .f32) == .f16)
        let b = try apply("bf16", w, shape: shape)
        #expect(b.allSatisfy { $0.bitPattern & 0xFFFF == 0 })
        let f8 = try apply("fp8", w, shape: shape)
        let scale = w.map(abs).max()! / 448
        // E4M3 has 3 mantissa bits: every scaled value needs at most 4 significant bits.
        for v in f8 where v != 0 {
            let m = abs(v / scale).significand * 8
            #expect(abs(m - m.rounded()) < 1e-3, "\(v / scale)")
        }
    }

    @Test("noise, LoRA and drift have the requested relative size; low-rank keeps the requested rank")
    func continuousAttacks() throws {
        let norm = w.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        func rel(_ spec: String) throws -> Double {
            let out = try apply(spec, w, shape: shape)
            return zip(out, w).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }.squareRoot() / norm
        }
        #expect(abs(try rel("noise:sigma=0.3") - 0.3) < 0.01)
        #expect(abs(try rel("lora:rank=8,eps=0.1") - 0.1) < 1e-3)
        #expect(abs(try rel("drift:eps=0.2") - 0.2) < 1e-3)
        let lr = try apply("lowrank:rank=0.25", w, shape: shape)
        let s = try LAPACK.singularValues(Matrix(rows: 64, cols: 256, storage: lr))
        #expect(s[15] > 1e-3 * s[0] && s[16] < 1e-4 * s[0])
    }

    @Test("chains apply in order: pruning then int4 differs from int4 then pruning")
    func chainOrder() throws {
        let a = try apply("prune:fraction=0.5,int4:group=128", w, shape: shape)
        let b = try apply("int4:group=128,prune:fraction=0.5", w, shape: shape)
        #expect(a != b)
        // prune → int4: zeros are re-quantized (on the grid, not necessarily zero); int4 → prune: exactly half are zero.
        #expect(b.filter { $0 == 0 }.count >= w.count / 2)
        let parsed = try AttackSpecParser.parse("prune:fraction=0.5,mode=random,int4:group=64,bf16")
        #expect(parsed.map(\.name) == ["prune", "int4", "bf16"])
        #expect(parsed[0].parameters == ["fraction": "0.5", "mode": "random"])
    }

    @Test("bad specs are clear errors", arguments: ["", "shred", "prune:fraction=2", "prune:amount=0.5", "int9", "gguf:type=Q3_K", "noise:sigma=abc"])
    func badSpecs(_ spec: String) {
        #expect(throws: AttackError.self) { try AttackCatalog.chain(spec) }
    }

    @Test("FFN permutation leaves the FFN's output unchanged on random inputs (BERT layout)")
    func permutationPreservesFunction() throws {
        let hidden = 32, ffn = 96
        var tensors: [String: [Float]] = [
            "encoder.layer.0.intermediate.dense.weight": Fixtures.floats(count: ffn * hidden, seed: 1, scale: 0.2),
            "encoder.layer.0.intermediate.dense.bias": Fixtures.floats(count: ffn, seed: 2, scale: 0.2),
            "encoder.layer.0.output.dense.weight": Fixtures.floats(count: hidden * ffn, seed: 3, scale: 0.2),
        ]
        let shapes = ["encoder.layer.0.intermediate.dense.weight": [ffn, hidden], "encoder.layer.0.intermediate.dense.bias": [ffn],
                      "encoder.layer.0.output.dense.weight": [hidden, ffn]]
        func forward(_ t: [String: [Float]], _ x: [Float]) -> [Float] {
            let up = Matrix(rows: ffn, cols: hidden, storage: t["encoder.layer.0.intermediate.dense.weight"]!)
            var h = [Float](repeating: 0, count: ffn)
            BLAS.gemv(up, x, into: &h)
            for i in 0..<ffn { h[i] = max(0, h[i] + t["encoder.layer.0.intermediate.dense.bias"]![i]) } // ReLU stands in for GELU: any elementwise map
            var y = [Float](repeating: 0, count: hidden)
            BLAS.gemv(Matrix(rows: hidden, cols: ffn, storage: t["encoder.layer.0.output.dense.weight"]!), h, into: &y)
            return y
        }
        let inputs = (0..<8).map { Fixtures.floats(count: hidden, seed: UInt64(100 + $0), scale: 1) }
        let before = inputs.map { forward(tensors, $0) }
        let attack = FFNPermutation(seed: 42)
        for (name, shape) in shapes {
            #expect(attack.applies(to: name, shape: shape, dtype: .f32))
            try attack.apply(name: name, shape: shape, values: &tensors[name]!, context: AttackContext())
        }
        #expect(!attack.applies(to: "encoder.layer.0.attention.output.dense.weight", shape: [hidden, hidden], dtype: .f32))
        #expect(tensors["encoder.layer.0.intermediate.dense.weight"]! != Fixtures.floats(count: ffn * hidden, seed: 1, scale: 0.2))
        for (x, y0) in zip(inputs, before) {
            let y1 = forward(tensors, x)
            for (a, b) in zip(y0, y1) { #expect(abs(a - b) <= 1e-5 * max(1, abs(a))) }
        }
    }
}

import Foundation
import LinearAlgebra

/// Scaled dot-product attention over every head, shared by the encoder (BERT) and the decoder (Llama).
enum Attention {
    /// `context` (n × heads·hd) of `q` (n × heads·hd) attending over `k` and `v` (n × kvHeads·hd): query head h uses
    /// key/value head h / (heads / kvHeads) (grouped-query attention; kvHeads = heads for plain multi-head), scores
    /// scaled by 1/sqrt(hd), a softmax per row (summed in double), causal when asked: row i over keys 0…i, later keys
    /// weigh 0.
    static func context(q: Matrix, k: Matrix, v: Matrix, heads: Int, kvHeads: Int, headDim hd: Int, causal: Bool) -> Matrix {
        let n = q.rows, qDim = heads * hd, kvDim = kvHeads * hd, group = heads / kvHeads
        let scale = 1 / Float(hd).squareRoot()
        var context = Matrix(rows: n, cols: qDim)
        var scores = [Float](repeating: 0, count: n * n)
        for head in 0..<heads {
            let kv = head / group
            q.storage.withUnsafeBufferPointer { pq in
                k.storage.withUnsafeBufferPointer { pk in
                    scores.withUnsafeMutableBufferPointer { ps in
                        BLAS.gemm(m: n, n: n, k: hd, alpha: scale, a: pq.baseAddress! + head * hd, lda: qDim,
                                  b: pk.baseAddress! + kv * hd, ldb: kvDim, transB: .transposed, c: ps.baseAddress!, ldc: n)
                    }
                }
            }
            for i in 0..<n {
                let keys = causal ? i + 1 : n
                var m = -Float.infinity
                for j in 0..<keys { m = max(m, scores[i * n + j]) }
                var sum = 0.0
                for j in 0..<keys { let e = Foundation.exp(scores[i * n + j] - m); scores[i * n + j] = e; sum += Double(e) }
                let inverse = Float(1 / sum)
                for j in 0..<keys { scores[i * n + j] *= inverse }
                for j in keys..<n { scores[i * n + j] = 0 }
            }
            scores.withUnsafeBufferPointer { ps in
                v.storage.withUnsafeBufferPointer { pv in
                    context.storage.withUnsafeMutableBufferPointer { pc in
                        BLAS.gemm(m: n, n: hd, k: n, a: ps.baseAddress!, lda: n, b: pv.baseAddress! + kv * hd, ldb: kvDim,
                                  c: pc.baseAddress! + head * hd, ldc: qDim)
                    }
                }
            }
        }
        return context
    }
}

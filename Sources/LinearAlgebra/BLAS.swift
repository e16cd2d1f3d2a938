import CBLAS

/// Thin wrappers over CBLAS (single precision, row-major).
///
/// Shape mismatches are programmer errors and stop with a precondition failure.
public enum BLAS {
    /// Whether an operand is used as stored or transposed.
    public enum Transpose: Sendable {
        case none, transposed
        var cblas: CBLAS_TRANSPOSE { self == .none ? CblasNoTrans : CblasTrans }
    }

    /// `C = alpha · op(A) · op(B) + beta · C`. The corresponding BLAS routine is `sgemm`.
    public static func gemm(_ a: Matrix, _ b: Matrix, transA: Transpose = .none, transB: Transpose = .none,
                            alpha: Float = 1, beta: Float = 0, into c: inout Matrix) {
        let (m, k) = transA == .none ? (a.rows, a.cols) : (a.cols, a.rows)
        let (kb, n) = transB == .none ? (b.rows, b.cols) : (b.cols, b.rows)
        precondition(k == kb, "gemm: inner dimensions differ (\(k) vs \(kb))")
        precondition(c.rows == m && c.cols == n, "gemm: output is \(c.rows)×\(c.cols), expected \(m)×\(n)")
        guard m > 0, n > 0 else { return }
        if k == 0 { if beta != 1 { scal(beta, &c.storage) }; return }
        a.storage.withUnsafeBufferPointer { pa in
            b.storage.withUnsafeBufferPointer { pb in
                c.storage.withUnsafeMutableBufferPointer { pc in
                    cblas_sgemm(CblasRowMajor, transA.cblas, transB.cblas, Int32(m), Int32(n), Int32(k), alpha,
                                pa.baseAddress, Int32(max(1, a.cols)), pb.baseAddress, Int32(max(1, b.cols)), beta,
                                pc.baseAddress, Int32(max(1, n)))
                }
            }
        }
    }

    /// `C = alpha · op(A) · op(B) + beta · C` on raw row-major buffers (m×n result, inner dimension k), for
    /// callers that stream blocks through reusable buffers. The corresponding BLAS routine is `sgemm`.
    public static func gemm(m: Int, n: Int, k: Int, alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, transA: Transpose = .none,
                            b: UnsafePointer<Float>, ldb: Int, transB: Transpose = .none, beta: Float = 0,
                            c: UnsafeMutablePointer<Float>, ldc: Int) {
        guard m > 0, n > 0, k > 0 else { return }
        cblas_sgemm(CblasRowMajor, transA.cblas, transB.cblas, Int32(m), Int32(n), Int32(k), alpha,
                    a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// `op(A) · op(B)` as a new matrix.
    public static func matmul(_ a: Matrix, _ b: Matrix, transA: Transpose = .none, transB: Transpose = .none) -> Matrix {
        let m = transA == .none ? a.rows : a.cols
        let n = transB == .none ? b.cols : b.rows
        var c = Matrix(rows: m, cols: n)
        gemm(a, b, transA: transA, transB: transB, into: &c)
        return c
    }

    /// `y = alpha · op(A) · x + beta · y`. The corresponding BLAS routine is `sgemv`.
    public static func gemv(_ a: Matrix, _ x: [Float], trans: Transpose = .none, alpha: Float = 1, beta: Float = 0,
                            into y: inout [Float]) {
        let (m, n) = trans == .none ? (a.rows, a.cols) : (a.cols, a.rows)
        precondition(x.count == n && y.count == m, "gemv: vector lengths \(x.count), \(y.count) do not fit \(m)×\(n)")
        guard a.rows > 0, a.cols > 0 else { if beta != 1 { scal(beta, &y) }; return }
        a.storage.withUnsafeBufferPointer { pa in
            x.withUnsafeBufferPointer { px in
                y.withUnsafeMutableBufferPointer { py in
                    cblas_sgemv(CblasRowMajor, trans.cblas, Int32(a.rows), Int32(a.cols), alpha, pa.baseAddress,
                                Int32(a.cols), px.baseAddress, 1, beta, py.baseAddress, 1)
                }
            }
        }
    }

    /// Inner product. The corresponding BLAS routine is `sdot` (accumulated in double via `dsdot`).
    public static func dot(_ x: UnsafeBufferPointer<Float>, _ y: UnsafeBufferPointer<Float>) -> Double {
        precondition(x.count == y.count, "dot: lengths differ")
        guard !x.isEmpty else { return 0 }
        return cblas_dsdot(Int32(x.count), x.baseAddress, 1, y.baseAddress, 1)
    }

    public static func dot(_ x: [Float], _ y: [Float]) -> Double {
        x.withUnsafeBufferPointer { px in y.withUnsafeBufferPointer { py in dot(px, py) } }
    }

    /// Euclidean norm. The corresponding BLAS routine is `snrm2`.
    public static func nrm2(_ x: [Float]) -> Float {
        guard !x.isEmpty else { return 0 }
        return x.withUnsafeBufferPointer { cblas_snrm2(Int32($0.count), $0.baseAddress, 1) }
    }

    /// `y += alpha · x`. The corresponding BLAS routine is `saxpy`.
    public static func axpy(_ alpha: Float, _ x: [Float], _ y: inout [Float]) {
        precondition(x.count == y.count, "axpy: lengths differ")
        guard !x.isEmpty else { return }
        x.withUnsafeBufferPointer { px in
            y.withUnsafeMutableBufferPointer { py in cblas_saxpy(Int32(px.count), alpha, px.baseAddress, 1, py.baseAddress, 1) }
        }
    }

    /// `x *= alpha`. The corresponding BLAS routine is `sscal`.
    public static func scal(_ alpha: Float, _ x: inout [Float]) {
        guard !x.isEmpty else { return }
        x.withUnsafeMutableBufferPointer { cblas_sscal(Int32($0.count), alpha, $0.baseAddress, 1) }
    }
}

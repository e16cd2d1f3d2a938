#if canImport(Glibc)
import Glibc
#endif
import CBLAS
import CLAPACKE

/// Factorizations through LAPACKE (single precision, row-major).
public enum LAPACK {
    /// A LAPACK routine reported failure (`info` ≠ 0). Seen only for invalid input such as NaNs.
    public struct Failure: Error, CustomStringConvertible {
        public var routine: String
        public var info: Int32
        public var description: String { "LAPACK \(routine) failed with info = \(info)" }
    }

    /// Thin QR: an m×n matrix with orthonormal columns spanning the columns of `a` (m ≥ n).
    /// The corresponding LAPACK routines are `sgeqrf` and `sorgqr`.
    /// - Complexity: O(m·n²).
    public static func orthonormalBasis(_ a: Matrix) throws -> Matrix {
        precondition(a.rows >= a.cols, "orthonormalBasis: needs rows ≥ cols (\(a.rows)×\(a.cols))")
        guard a.cols > 0 else { return a }
        var q = a
        var tau = [Float](repeating: 0, count: a.cols)
        let m = Int32(a.rows), n = Int32(a.cols)
        var info = q.storage.withUnsafeMutableBufferPointer { pq in
            tau.withUnsafeMutableBufferPointer { pt in
                LAPACKE_sgeqrf(LAPACK_ROW_MAJOR, m, n, pq.baseAddress, n, pt.baseAddress)
            }
        }
        guard info == 0 else { throw Failure(routine: "sgeqrf", info: info) }
        info = q.storage.withUnsafeMutableBufferPointer { pq in
            tau.withUnsafeMutableBufferPointer { pt in
                LAPACKE_sorgqr(LAPACK_ROW_MAJOR, m, n, n, pq.baseAddress, n, pt.baseAddress)
            }
        }
        guard info == 0 else { throw Failure(routine: "sorgqr", info: info) }
        return q
    }

    /// The Gram–Schmidt basis of the columns of G (m×n, m ≥ n, full column rank): Q of the thin QR
    /// factorization G = Q R normalized so that diag(R) > 0, which makes Q unique and independent of the
    /// LAPACK implementation's sign conventions.
    ///
    /// `g` holds G in column-major order and is overwritten. Column-major storage lets `sgeqrf`/`sorgqr` run
    /// without LAPACKE's row-major transposes and NaN scans; Q is returned row-major.
    public static func gramSchmidtBasis(columnMajor g: inout [Float], rows m: Int, cols n: Int) throws -> Matrix {
        precondition(m >= n && g.count == m * n, "gramSchmidtBasis: needs rows ≥ cols and rows·cols values")
        guard n > 0 else { return Matrix(rows: m, cols: 0) }
        var tau = [Float](repeating: 0, count: n)
        var query: Float = 0
        var info = LAPACKE_sgeqrf_work(LAPACK_COL_MAJOR, Int32(m), Int32(n), nil, Int32(m), nil, &query, -1)
        guard info == 0 else { throw Failure(routine: "sgeqrf", info: info) }
        var work = [Float](repeating: 0, count: max(1, Int(query), 64 * n))
        info = g.withUnsafeMutableBufferPointer { pg in
            LAPACKE_sgeqrf_work(LAPACK_COL_MAJOR, Int32(m), Int32(n), pg.baseAddress, Int32(m), &tau, &work, Int32(work.count))
        }
        guard info == 0 else { throw Failure(routine: "sgeqrf", info: info) }
        // Column j of Q changes sign where R_jj < 0.
        let flip = (0..<n).map { g[$0 * m + $0] < 0 }
        info = g.withUnsafeMutableBufferPointer { pg in
            LAPACKE_sorgqr_work(LAPACK_COL_MAJOR, Int32(m), Int32(n), Int32(n), pg.baseAddress, Int32(m), &tau, &work, Int32(work.count))
        }
        guard info == 0 else { throw Failure(routine: "sorgqr", info: info) }
        var q = Matrix(rows: m, cols: n)
        g.withUnsafeBufferPointer { src in
            q.storage.withUnsafeMutableBufferPointer { dst in
                for j in 0..<n {
                    let sign: Float = flip[j] ? -1 : 1
                    for i in 0..<m { dst[i * n + j] = sign * src[j * m + i] }
                }
            }
        }
        return q
    }

    /// The same basis by Cholesky QR, for tall, well-conditioned G (e.g. Gaussian with rows ≥ 4·cols):
    /// W = GᵀG = RᵀR in double precision (`dsyrk`, `dpotrf`), then Q = G R⁻¹ (`dtrtri`, then one `sgemm`).
    /// R from Cholesky has a positive diagonal, so Q is the Gram–Schmidt basis; with W in double the loss of
    /// orthogonality, about 1e-16·cond(G)², is far below float rounding, and the level-3 calls run several
    /// times faster than Householder's level-2 sweeps for 32 columns. Returns nil when W is not numerically
    /// positive definite or G is too ill-conditioned (use `gramSchmidtBasis(columnMajor:rows:cols:)`).
    public static func choleskyGramSchmidtBasis(_ g: Matrix) -> Matrix? {
        let m = g.rows, n = g.cols
        precondition(m >= n, "choleskyGramSchmidtBasis: needs rows ≥ cols")
        guard n > 0 else { return g }
        let wide = g.storage.map(Double.init)
        var w = [Double](repeating: 0, count: n * n)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(m), 1, wide, Int32(n), 0, &w, Int32(n))
        guard LAPACKE_dpotrf(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "U")), Int32(n), &w, Int32(n)) == 0 else { return nil }
        // cond(G) ≥ max R_jj / min R_jj; beyond 1e3 leave it to Householder.
        let diagonal = (0..<n).map { w[$0 * n + $0] }
        guard let lo = diagonal.min(), let hi = diagonal.max(), lo > 0, hi / lo < 1e3 else { return nil }
        for i in 0..<n { for j in 0..<i { w[i * n + j] = 0 } }
        guard LAPACKE_dtrtri(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "U")), Int8(UInt8(ascii: "N")), Int32(n), &w, Int32(n)) == 0 else { return nil }
        return BLAS.matmul(g, Matrix(rows: n, cols: n, storage: w.map { Float($0) }))
    }

    /// Thin singular value decomposition `A = U · diag(s) · Vᵀ`, singular values descending.
    /// The corresponding LAPACK routine is `sgesdd`.
    /// - Returns: `u` (m×k), `s` (k), `vt` (k×n) with k = min(m, n).
    public static func svd(_ a: Matrix) throws -> (u: Matrix, s: [Float], vt: Matrix) {
        let m = a.rows, n = a.cols, k = min(m, n)
        guard k > 0 else { return (Matrix(rows: m, cols: 0), [], Matrix(rows: 0, cols: n)) }
        var work = a
        var s = [Float](repeating: 0, count: k)
        var u = Matrix(rows: m, cols: k)
        var vt = Matrix(rows: k, cols: n)
        let info = work.storage.withUnsafeMutableBufferPointer { pa in
            s.withUnsafeMutableBufferPointer { ps in
                u.storage.withUnsafeMutableBufferPointer { pu in
                    vt.storage.withUnsafeMutableBufferPointer { pv in
                        LAPACKE_sgesdd(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "S")), Int32(m), Int32(n), pa.baseAddress, Int32(n),
                                       ps.baseAddress, pu.baseAddress, Int32(k), pv.baseAddress, Int32(n))
                    }
                }
            }
        }
        guard info == 0 else { throw Failure(routine: "sgesdd", info: info) }
        return (u, s, vt)
    }

    /// Singular values only, descending.
    public static func singularValues(_ a: Matrix) throws -> [Float] {
        let m = a.rows, n = a.cols, k = min(m, n)
        guard k > 0 else { return [] }
        var work = a
        var s = [Float](repeating: 0, count: k)
        var dummyU: Float = 0, dummyV: Float = 0
        let info = work.storage.withUnsafeMutableBufferPointer { pa in
            s.withUnsafeMutableBufferPointer { ps in
                // U and Vᵀ are not referenced, but LAPACKE's row-major checks still want leading dimensions of m and n.
                LAPACKE_sgesdd(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "N")), Int32(m), Int32(n), pa.baseAddress, Int32(n),
                               ps.baseAddress, &dummyU, Int32(m), &dummyV, Int32(n))
            }
        }
        guard info == 0 else { throw Failure(routine: "sgesdd", info: info) }
        return s
    }

    /// Randomized top-`rank` SVD (Halko, Martinsson & Tropp 2011, Algorithms 4.4 and 5.1): a Gaussian
    /// sketch with `oversampling` extra columns, `powerIterations` subspace iterations (re-orthonormalized),
    /// then an exact SVD of the small projected matrix.
    /// - Parameter seed: seeds the sketch; the same seed gives the same result on the same BLAS.
    public static func randomizedSVD(_ a: Matrix, rank: Int, oversampling: Int = 10, powerIterations: Int = 2,
                                     seed: UInt64 = 0x5EED) throws -> (u: Matrix, s: [Float], vt: Matrix) {
        let m = a.rows, n = a.cols
        let l = min(rank + oversampling, min(m, n))
        precondition(rank >= 1 && rank <= min(m, n), "randomizedSVD: rank \(rank) outside 1...\(min(m, n))")
        var rng = SplitMix64(seed: seed)
        let omega = Matrix(rows: n, cols: l, storage: (0..<(n * l)).map { _ in rng.nextGaussian() })
        var q = try orthonormalBasis(BLAS.matmul(a, omega))                   // m×l
        for _ in 0..<powerIterations {
            let z = try orthonormalBasis(BLAS.matmul(a, q, transA: .transposed))        // n×l
            q = try orthonormalBasis(BLAS.matmul(a, z))                          // m×l
        }
        let b = BLAS.matmul(q, a, transA: .transposed)                                   // l×n
        let (ub, s, vt) = try svd(b)
        let u = BLAS.matmul(q, ub)                                               // m×l
        // Keep the leading `rank` triplets.
        let uk = Matrix(rows: m, cols: rank) { i, j in u[i, j] }
        let vtk = Matrix(rows: rank, cols: n) { i, j in vt[i, j] }
        return (uk, Array(s.prefix(rank)), vtk)
    }
}

/// A small seeded generator for sketches and tests (not for key material).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The generator's whole state (the next draw mixes `state + γ`), for vectorized consumers.
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// A standard normal sample (Box–Muller).
    public mutating func nextGaussian() -> Float {
        let u1 = Double(next() >> 11 | 1) * 0x1p-53
        let u2 = Double(next() >> 11) * 0x1p-53
        return Float((-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2))
    }
}

@inline(__always) private func _log(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Glibc.cos(x) }

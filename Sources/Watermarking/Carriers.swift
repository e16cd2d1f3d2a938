import LinearAlgebra

/// The keyed subspace and pattern of one tensor: `A` (m×a) and `B` (n×b) with orthonormal columns, and
/// the ±1 pattern `S` (a×b). The mark is `A S Bᵀ`.
public struct Carriers: Sendable {
    public let a: Matrix
    public let b: Matrix
    public let s: Matrix

    /// Default subspace dimensions.
    public static let defaultRank = 32

    /// HKDF purposes (part of the format).
    static let purposeA = "carrier-A", purposeB = "carrier-B", purposeS = "pattern-S"

    /// Derives the carriers of tensor `name` with shape rows×cols.
    ///
    /// `A` is the Gram–Schmidt orthonormalization of a keyed Gaussian matrix (drawn row-major), computed by
    /// LAPACK's Householder QR and then normalized so that `diag(R) > 0`, which makes it independent of the
    /// QR implementation's sign conventions. Likewise `B`. Ranks are capped by the dimensions.
    public static func derive(secret: [UInt8], tensor name: String, rows: Int, cols: Int,
                              rank: Int = defaultRank) throws -> Carriers {
        let shape = [rows, cols]
        let ra = min(rank, rows), rb = min(rank, cols)
        let a = try orthonormalGaussian(secret: secret, purpose: purposeA, tensor: name, shape: shape, rows: rows, cols: ra)
        let b = try orthonormalGaussian(secret: secret, purpose: purposeB, tensor: name, shape: shape, rows: cols, cols: rb)
        var g = KeyedGenerator(secret: secret, purpose: purposeS, tensor: name, shape: shape)
        let s = Matrix(rows: ra, cols: rb, storage: (0..<(ra * rb)).map { _ in g.nextSign() })
        return Carriers(a: a, b: b, s: s)
    }

    static func orthonormalGaussian(secret: [UInt8], purpose: String, tensor: String, shape: [Int],
                                    rows: Int, cols: Int) throws -> Matrix {
        let subkey = KeyedGenerator.subkey(secret: secret, info: KeyedGenerator.info(purpose: purpose, tensor: tensor, shape: shape))
        // The float draws fill G row-major. Tall G (every real weight matrix): Cholesky QR. Otherwise, or if G
        // were ever too ill-conditioned for it, Householder QR.
        let g = Matrix(rows: rows, cols: cols, storage: KeyedGenerator.gaussians(subkey: subkey, count: rows * cols))
        if rows >= 4 * cols, let q = LAPACK.choleskyGramSchmidtBasis(g) { return q }
        var columnMajor = g.transposed.storage
        return try LAPACK.gramSchmidtBasis(columnMajor: &columnMajor, rows: rows, cols: cols)
    }

    /// The rank-a pattern `A S Bᵀ` (m×n). Its Frobenius norm is sqrt(a·b).
    public func pattern() -> Matrix {
        BLAS.matmul(BLAS.matmul(a, s), b, transB: .transposed)
    }

    /// `Y = Aᵀ X B` (a×b) for an m×n matrix X.
    public func project(_ x: Matrix) -> Matrix {
        precondition(x.rows == a.rows && x.cols == b.rows, "project: \(x.rows)×\(x.cols) against carriers \(a.rows)×\(b.rows)")
        var xb = Matrix(rows: x.rows, cols: b.cols)
        x.storage.withUnsafeBufferPointer { xs in
            xb.storage.withUnsafeMutableBufferPointer { zs in
                RankProjection.project(xs, rows: x.rows, cols: x.cols, b: b, into: zs.baseAddress!)
            }
        }
        return BLAS.matmul(a, xb, transA: .transposed)
    }
}

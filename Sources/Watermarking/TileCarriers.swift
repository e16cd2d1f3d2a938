import CKernels
import Foundation
import LinearAlgebra

/// The keyed carriers of format v2 (docs/FORMAT.md): one tile carrier `U` and a ±1 pattern per tile position,
/// all derived from the key and the geometry only — never from a tensor's name.
///
/// A weight matrix is cut into tiles of `size`×`size` weights from its top-left corner (the last tile row and
/// column may be shorter). Tile (i, j) covers rows `i·size ..< min(m, (i+1)·size)` and columns
/// `j·size ..< min(n, (j+1)·size)` and carries
///
///     ΔW_ij = β · U[0..<r] S_ij U[0..<c]ᵀ
///
/// where `U` (size×rank, orthonormal columns) is the same for every tile, tensor and axis, and `S_ij` (rank×rank
/// signs) depends on the key and (i, j) alone. Because rows and columns share `U`, the projection of a tile read
/// transposed is the transpose of its projection; because `S` is keyed by absolute tile position, a matrix that
/// lost or gained trailing rows (a resized vocabulary) or was cut or concatenated on tile boundaries keeps the
/// mark of every tile that survived.
public struct TileCarriers: Sendable {
    /// Tile side (weights).
    public static let size = 128
    /// Carrier rank a = b.
    public static let rank = 32

    /// HKDF `info` strings (part of the format).
    static let carrierInfo = Array("weightmark/v2|tile-carrier".utf8)
    static let patternInfo = Array("weightmark/v2|tile-pattern".utf8)

    /// U: size×rank, orthonormal columns.
    public let u: Matrix
    /// U[0..<k] for every k in 1...size (index k − 1): the carriers of tiles with k rows or columns.
    let prefixes: [Matrix]
    private let patternKey: [UInt8]

    /// Derives the carriers of `secret`.
    ///
    /// `U` is the orthonormalization (QR with diag(R) > 0) of size×rank keyed Gaussians drawn row-major, so row k
    /// of the Gaussian matrix depends on k alone.
    public init(secret: [UInt8]) throws {
        let subkey = KeyedGenerator.subkey(secret: secret, info: Self.carrierInfo)
        let g = Matrix(rows: Self.size, cols: Self.rank, storage: KeyedGenerator.gaussians(subkey: subkey, count: Self.size * Self.rank))
        if let q = LAPACK.choleskyGramSchmidtBasis(g) {
            u = q
        } else {
            var columnMajor = g.transposed.storage
            u = try LAPACK.gramSchmidtBasis(columnMajor: &columnMajor, rows: Self.size, cols: Self.rank)
        }
        let full = u
        prefixes = (1...Self.size).map { k in
            Matrix(rows: k, cols: Self.rank, storage: Array(full.storage[0..<(k * Self.rank)]))
        }
        patternKey = KeyedGenerator.subkey(secret: secret, info: Self.patternInfo)
    }

    /// The carrier of a tile side with `count` weights (1...size).
    public func carrier(_ count: Int) -> Matrix {
        precondition((1...Self.size).contains(count), "a tile side has 1...\(Self.size) weights")
        return prefixes[count - 1]
    }

    /// S_ij as rank×rank ±1 floats, row-major: the first 1,024 bits of ChaCha20 keyed by the pattern subkey with
    /// nonce LE32(i) ‖ LE32(j) ‖ LE32(0) and counter 0; entry (r, c) is bit c (least significant first) of
    /// keystream word r: 1 → +1, 0 → −1.
    public func pattern(row i: Int, column j: Int) -> [Float] {
        precondition(i >= 0 && j >= 0 && i <= Int(UInt32.max) && j <= Int(UInt32.max), "tile index out of range")
        let nonce = Self.le32(UInt32(i)) + Self.le32(UInt32(j)) + [0, 0, 0, 0]
        var stream = ChaCha20(key: patternKey, nonce: nonce)
        var out = [Float](repeating: 0, count: Self.rank * Self.rank)
        for r in 0..<Self.rank {
            let w = stream.nextWord()
            for c in 0..<Self.rank { out[r * Self.rank + c] = (w >> UInt32(c)) & 1 == 1 ? 1 : -1 }
        }
        return out
    }

    static func le32(_ v: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    /// Number of tiles along a side of `count` weights.
    public static func tiles(_ count: Int) -> Int { (count + size - 1) / size }

    /// Weights of tile `index` along a side of `count` weights.
    public static func extent(_ index: Int, of count: Int) -> Int { min(size, count - index * size) }

    /// ‖U_r S U_cᵀ‖²_F = tr(Sᵀ (U_rᵀU_r) S (U_cᵀU_c)); exactly rank² for full tiles (U orthonormal).
    func patternEnergy(_ s: [Float], rows r: Int, cols c: Int) -> Double {
        if r == Self.size && c == Self.size { return Double(Self.rank * Self.rank) }
        let sm = Matrix(rows: Self.rank, cols: Self.rank, storage: s)
        let gr = BLAS.matmul(carrier(r), carrier(r), transA: .transposed)
        let gc = BLAS.matmul(carrier(c), carrier(c), transA: .transposed)
        let left = BLAS.matmul(gr, sm)             // (U_rᵀU_r) S
        let m = BLAS.matmul(left, gc)              // (U_rᵀU_r) S (U_cᵀU_c)
        return BLAS.dot(m.storage, s)              // ⟨M, S⟩ = tr(Sᵀ M)
    }

    /// ‖P‖²_F of the whole m×n pattern.
    public func patternEnergy(rows m: Int, cols n: Int) -> Double {
        let ti = Self.tiles(m), tj = Self.tiles(n)
        var total = 0.0
        for i in 0..<ti {
            for j in 0..<tj {
                let r = Self.extent(i, of: m), c = Self.extent(j, of: n)
                total += r == Self.size && c == Self.size ? Double(Self.rank * Self.rank) : patternEnergy(pattern(row: i, column: j), rows: r, cols: c)
            }
        }
        return total
    }

    /// Writes rows `rows` of the m×n pattern P (row-major, leading dimension n) into `out`.
    func fillPattern(rows: Range<Int>, totalRows m: Int, cols n: Int, into out: UnsafeMutablePointer<Float>) {
        var row = rows.lowerBound
        var left = [Float](repeating: 0, count: Self.size * Self.rank)
        while row < rows.upperBound {
            let i = row / Self.size
            let tileStart = i * Self.size
            let r = Self.extent(i, of: m)
            let end = min(rows.upperBound, tileStart + r)
            let k = end - row
            let ur = carrier(r)
            for j in 0..<Self.tiles(n) {
                let c = Self.extent(j, of: n)
                let s = pattern(row: i, column: j)
                // left (k×rank) = U_r[row - tileStart ..< end - tileStart] · S
                ur.storage.withUnsafeBufferPointer { us in
                    s.withUnsafeBufferPointer { ss in
                        left.withUnsafeMutableBufferPointer { ls in
                            BLAS.gemm(m: k, n: Self.rank, k: Self.rank, a: us.baseAddress! + (row - tileStart) * Self.rank, lda: Self.rank,
                                      b: ss.baseAddress!, ldb: Self.rank, c: ls.baseAddress!, ldc: Self.rank)
                        }
                    }
                }
                // out[rows, j-th tile columns] = left · U_cᵀ
                carrier(c).storage.withUnsafeBufferPointer { uc in
                    left.withUnsafeBufferPointer { ls in
                        BLAS.gemm(m: k, n: c, k: Self.rank, a: ls.baseAddress!, lda: Self.rank, b: uc.baseAddress!, ldb: Self.rank,
                                  transB: .transposed, c: out + (row - rows.lowerBound) * n + j * Self.size, ldc: n)
                    }
                }
            }
            row = end
        }
    }
}

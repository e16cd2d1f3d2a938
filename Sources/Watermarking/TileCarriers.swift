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
        var rowsOfPattern = TilePatternRows(tiles: self, rows: m, cols: n)
        rowsOfPattern.fill(rows: rows, into: out)
    }
}

/// Rows of one m×n format-v2 pattern, produced block after block (the marking core asks for L2-sized row blocks).
///
/// Tile (i, j) of P is `(U_r S_ij) U_cᵀ`. The left factors of the current tile row, `L = U_r [S_i0 S_i1 …]`
/// (r × rank·J row-major: row ρ holds `(U_r S_ij)[ρ]` for j = 0, 1, …), are derived once in one product and kept
/// while the row blocks inside that tile row are filled. When every column tile is full (n a multiple of 128),
/// k rows of L read as k·J rows of `rank` are exactly the rows the k×n block needs, one `U ᵀ` each: the block is
/// one k·J×128 product into contiguous memory, by the rank-32 pattern kernel format v1 uses. Otherwise each column
/// tile is one k×c×rank product.
struct TilePatternRows {
    let tiles: TileCarriers
    let m: Int, n: Int
    private var tileRow = -1
    /// `U_r [S_i0 S_i1 …]` for `tileRow`: r × (rank · column tiles), row-major.
    private var left: [Float] = []
    /// `Uᵀ` packed for the pattern kernel (full column tiles only).
    private let packedU: [Float]?

    init(tiles: TileCarriers, rows m: Int, cols n: Int) {
        self.tiles = tiles
        self.m = m
        self.n = n
        packedU = n % TileCarriers.size == 0 ? RankProjection.packForPattern(tiles.carrier(TileCarriers.size)) : nil
    }

    private mutating func prepare(tileRow i: Int) {
        guard i != tileRow else { return }
        let (g, a) = (TileCarriers.size, TileCarriers.rank)
        let r = TileCarriers.extent(i, of: m)
        let columnTiles = TileCarriers.tiles(n), width = columnTiles * a
        // [S_i0 S_i1 …]: rank × rank·J, row q of S_ij at columns j·rank ..< (j+1)·rank.
        var band = [Float](repeating: 0, count: a * width)
        for j in 0..<columnTiles {
            let s = tiles.pattern(row: i, column: j)
            for q in 0..<a { for c in 0..<a { band[q * width + j * a + c] = s[q * a + c] } }
        }
        if left.count < g * width { left = [Float](repeating: 0, count: g * width) }
        tiles.carrier(r).storage.withUnsafeBufferPointer { us in
            band.withUnsafeBufferPointer { bs in
                left.withUnsafeMutableBufferPointer { ls in
                    BLAS.gemm(m: r, n: width, k: a, a: us.baseAddress!, lda: a, b: bs.baseAddress!, ldb: width,
                              c: ls.baseAddress!, ldc: width)
                }
            }
        }
        tileRow = i
    }

    /// Writes rows `rows` of P (row-major, leading dimension n) into `out`.
    mutating func fill(rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let (g, a) = (TileCarriers.size, TileCarriers.rank)
        let columnTiles = TileCarriers.tiles(n), width = columnTiles * a
        var row = rows.lowerBound
        while row < rows.upperBound {
            let i = row / g
            let tileStart = i * g
            let end = min(rows.upperBound, tileStart + TileCarriers.extent(i, of: m))
            let k = end - row
            prepare(tileRow: i)
            let dst = out + (row - rows.lowerBound) * n
            left.withUnsafeBufferPointer { ls in
                let src = ls.baseAddress! + (row - tileStart) * width
                if let packedU {
                    packedU.withUnsafeBufferPointer { weightmark_pattern32(RankProjection.level, src, k * columnTiles, $0.baseAddress, g, dst) }
                    return
                }
                for j in 0..<columnTiles {
                    let c = TileCarriers.extent(j, of: n)
                    // out[row..<end, j-th tile columns] = (U_r S_ij)[row − tileStart ..< end − tileStart] · U_cᵀ
                    tiles.carrier(c).storage.withUnsafeBufferPointer { uc in
                        BLAS.gemm(m: k, n: c, k: a, a: src + j * a, lda: width, b: uc.baseAddress!, ldb: a, transB: .transposed,
                                  c: dst + j * g, ldc: n)
                    }
                }
            }
            row = end
        }
    }
}

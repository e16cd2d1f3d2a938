import CKernels
import Foundation
import LinearAlgebra
import TensorIO

/// How a suspect matrix is read back onto the tile grid of the matrix that was marked: a re-packaging hypothesis.
///
/// `orientation` says whether the suspect stores the marked matrix as it was or transposed; `layout` says which
/// rows (of the matrix as read) came from where: offsets of a slice cut on tile boundaries (a model-parallel shard),
/// blocks of a fused matrix (`qkv_proj`, `gate_up_proj`, GPT-NeoX's per-head interleaving), or the rotary row
/// permutation between Hugging Face and Meta layouts.
public struct TileHypothesis: Sendable, Codable, Equatable, CustomStringConvertible {
    public enum Orientation: String, Sendable, Codable { case stored, transposed }
    public enum Layout: Sendable, Codable, Equatable {
        /// The whole matrix, tile (i, j) at position (i + rowTiles, j + columnTiles): a slice starting on a tile boundary.
        case offset(rowTiles: Int, columnTiles: Int)
        /// The whole matrix, row ρ at marked row ρ + `rows` (not a multiple of 128): a row slice starting off the tile grid.
        case rowShift(rows: Int)
        /// The whole matrix, column c at marked column c + columnTiles·128 + pad (0 < pad < 128): a column slice
        /// starting off the tile grid (the second shard of a row-parallel `down_proj` whose width is not a multiple
        /// of 256), read from the column tiles of a projection whose grid is shifted by `pad`.
        case columnShift(pad: Int, columnTiles: Int)
        /// Consecutive row blocks of these sizes, each a matrix of its own (fused projections).
        case blocks([Int])
        /// `parts` matrices interleaved per head of `headDim` rows (GPT-NeoX `query_key_value`).
        case interleaved(headDim: Int, parts: Int)
        /// Rows in Meta's rotary order (pairs interleaved within heads of `headDim` rows), marked in Hugging Face order.
        case metaRotary(headDim: Int)
    }
    public var orientation: Orientation
    public var layout: Layout

    public static let identity = TileHypothesis(orientation: .stored, layout: .offset(rowTiles: 0, columnTiles: 0))

    public var description: String {
        let o = orientation == .stored ? "" : "transposed"
        let l: String
        switch layout {
        case let .offset(r, c) where r == 0 && c == 0: l = ""
        case let .offset(r, c): l = "slice at tile offset (\(r), \(c))"
        case let .rowShift(d): l = "slice at row \(d)"
        case let .columnShift(pad, c): l = "slice at column \(c * TileCarriers.size + pad)"
        case let .blocks(sizes): l = "fused rows " + sizes.map(String.init).joined(separator: "+")
        case let .interleaved(hd, parts): l = "\(parts) parts interleaved per head of \(hd) rows"
        case let .metaRotary(hd): l = "Meta rotary row order, heads of \(hd) rows"
        }
        return [o, l].filter { !$0.isEmpty }.joined(separator: ", ").isEmpty ? "as stored" : [o, l].filter { !$0.isEmpty }.joined(separator: ", ")
    }

    /// Hypotheses that are not the identity pay this much pilot Z to be chosen over it (see `TileDetector`).
    var penalty: Double {
        if self == .identity { return 0 }
        if case let .offset(r, c) = layout, r == 0, c == 0 { return ReadingMargin.wholeMatrix } // transposed only
        return ReadingMargin.otherReading
    }
}

/// The margins, in pilot Z, of the choice of readings (docs/FORMAT.md, "Detection", step 4, names them). They steer
/// only which reading is scored; the bound holds whatever they are, since the choice never sees the scored patterns.
enum ReadingMargin {
    /// "Default orientation": the model reads transposed when transposition's pilot Z beats the stored reading's by
    /// more than this.
    static let transposedModel = 3.0
    /// "Model-parallel shard": the least pooled pilot Z of a shard reading.
    static let shardMinimum = 3.0
    /// "Per shape": the penalty of the identity or plain transposition when it is not the group's base.
    static let wholeMatrix = 1.5
    /// "Per shape": the penalty of every other reading (above the largest of ~40 pilot scores under H0, ≈ 2.7).
    static let otherReading = 4.0
    /// "Per name pattern": a subgroup leaves its default only for a reading whose pilot Z is larger by more than this.
    static let subgroupOverride = 3.0
    /// "Model-parallel shard": shards s = 1 ..< this are tried on each axis.
    static let shardCount = 8
}

/// Detection of format v2 (docs/FORMAT.md §Detection).
///
/// Per suspect matrix X (m×n) the column tiles are projected once, `Z_j = X[:, tile j] · U` (m×32 each); the
/// projection of any tile, under any hypothesis, is then `U_rᵀ Z_j[rows]` (32×32). Tiles are mapped to tile
/// positions p = (i, j) of the marked matrix and pooled: `c_p = Σ w_t Y_t/‖Y_t‖` with w_t = sqrt(tile weights), and
///
///     Z = Σ_p ⟨c_p, S_p⟩ / sqrt(Σ_p ‖c_p‖²).
///
/// The hypothesis of each group of same-shaped matrices is chosen on the pilot positions (1 in 8, fixed by
/// geometry) and Z is computed on the other positions only. The choice depends on the pilot patterns and the
/// data, both independent of the scored patterns, so under H0 Z is a Rademacher sum with unit coefficient norm
/// given the choice: P(Z ≥ z) ≤ exp(−z²/2) however many hypotheses were tried.
enum TileDetector {
    static let g = TileCarriers.size, a = TileCarriers.rank

    /// Pilot positions: (i + 3j) mod 8 = 0.
    static func isPilot(_ i: Int, _ j: Int) -> Bool { (i + 3 * j) % 8 == 0 }

    struct Position: Hashable { var i: Int; var j: Int }

    /// One tile's evidence: where it lands, its weight, and its normalized projection.
    struct TileScore { var position: Position; var weight: Double; var unit: [Float] }

    /// Column-tile projections of one suspect matrix, in one buffer from the detection's pool (a fresh
    /// allocation of ¼ of the matrix in floats would cost a zeroed page per 4 KiB, matrix after matrix).
    final class Projection {
        let rows: Int, cols: Int
        /// Column tile j is rows×32 floats, row-major, at j·rows·32; nil once dropped.
        private(set) var buffer: PooledBytes?
        var erased = 0
        init(rows: Int, cols: Int, pool: ByteBufferPool) {
            self.rows = rows; self.cols = cols
            buffer = pool.take(TileCarriers.tiles(cols) * rows * TileDetector.a * MemoryLayout<Float>.size)
        }
        var columnTiles: Int { TileCarriers.tiles(cols) }
        /// Column tile j's projection (rows×32, row-major). Valid while the buffer is held.
        func column(_ j: Int) -> UnsafeMutablePointer<Float> {
            buffer!.mutableBytes.baseAddress!.assumingMemoryBound(to: Float.self) + j * rows * TileDetector.a
        }
        var allFinite: Bool {
            let all = UnsafeBufferPointer(start: column(0), count: columnTiles * rows * TileDetector.a)
            return all.allSatisfy(\.isFinite)
        }
        /// Returns the buffer to the pool: only tiles computed before stay available.
        func drop() { buffer = nil }
    }

    /// Projects every column tile of `name` (minus `reference`, if given, in the same orientation, or its transpose).
    static func project(name: String, rows m: Int, cols n: Int, suspect: any RowBlockDecodable,
                        reference: ReferenceRows?, tiles: TileCarriers, pool: ByteBufferPool) throws -> Projection {
        try project(name: name, rows: m, cols: n, pads: [0], suspect: suspect, reference: reference, tiles: tiles, pool: pool)[0]
    }

    /// The same on grids shifted by each of `pads` (0 ..< 128) in one read of the matrix: the projection for pad q
    /// is that of the matrix with q zero columns put in front, [0 | X] (m × (n + q)), so its column tile j holds
    /// suspect columns j·G − q ..< (j + 1)·G − q against carrier rows from max(0, q − j·G) on.
    static func project(name: String, rows m: Int, cols n: Int, pads: [Int], suspect: any RowBlockDecodable,
                        reference: ReferenceRows?, tiles: TileCarriers, pool: ByteBufferPool) throws -> [Projection] {
        let results = pads.map { Projection(rows: m, cols: n + $0, pool: pool) }
        let blockRows = max(8, min(m, (1 << 18) / max(1, n)))
        var x: [Float] = []
        var sanitize = false
        func runColumns(_ base: UnsafePointer<Float>?, _ bf16: UnsafePointer<UInt16>?, start: Int, k: Int) {
            for (pad, result) in zip(pads, results) {
                for j in 0..<result.columnTiles {
                    let first = max(0, j * g - pad), c = min(n, (j + 1) * g - pad) - first
                    let u = tiles.carrier(first - (j * g - pad) + c) // carrier rows first − (j·G − pad) ..< that + c
                    let zs = result.column(j)
                    u.storage.withUnsafeBufferPointer { whole in
                        let us = whole.baseAddress! + (first - (j * g - pad)) * a
                        if let base {
                            weightmark_project32_f32(RankProjection.level, base + first, k, c, n, us, zs + start * a)
                        } else if let bf16 {
                            weightmark_project32_bf16(RankProjection.level, bf16 + first, k, c, n, us, zs + start * a)
                        }
                    }
                }
            }
        }
        while true {
            var start = 0
            for r in results { r.erased = 0 }
            while start < m {
                let end = min(m, start + blockRows), k = end - start
                if reference == nil, !sanitize, try suspect.withStoredRows(named: name, rows: start..<end, { raw, dtype -> Bool in
                    switch dtype {
                    case .f32: runColumns(raw.baseAddress!.assumingMemoryBound(to: Float.self), nil, start: start, k: k); return true
                    case .bf16: runColumns(nil, raw.baseAddress!.assumingMemoryBound(to: UInt16.self), start: start, k: k); return true
                    default: return false
                    }
                }) == true {
                    start = end
                    continue
                }
                if x.isEmpty { x = [Float](repeating: 0, count: blockRows * n) }
                try x.withUnsafeMutableBufferPointer { xs in
                    let block = UnsafeMutableBufferPointer(rebasing: xs[0..<(k * n)])
                    try suspect.decodeRows(named: name, rows: start..<end, into: block)
                    var erased = 0
                    if let reference { erased += try reference.subtract(rows: start..<end, from: block) }
                    if sanitize {
                        erased += Residual.clearNonFinite(block)
                    }
                    for r in results { r.erased += erased }
                    runColumns(UnsafePointer(block.baseAddress!), nil, start: start, k: k)
                }
                start = end
            }
            // A NaN/±Inf anywhere poisons its column tile: redo with non-finite values counted as erased.
            if sanitize || results.allSatisfy(\.allFinite) { return results }
            sanitize = true
        }
    }

    /// The reference rows subtracted in informed mode, stored as the suspect is or transposed.
    final class ReferenceRows {
        let source: any RowBlockDecodable
        let name: String
        let transposed: Bool
        /// Suspect row ρ is reference row ρ + rowOffset (a row slice of a taller reference; not transposed).
        let rowOffset: Int
        private var full: [Float]?
        let rows: Int, cols: Int // of the reference as stored
        init(source: any RowBlockDecodable, name: String, rows: Int, cols: Int, transposed: Bool, rowOffset: Int = 0) {
            self.source = source; self.name = name; self.rows = rows; self.cols = cols; self.transposed = transposed
            self.rowOffset = rowOffset
        }

        /// block −= reference rows (in the suspect's orientation); exact zeros of the suspect where the reference is
        /// non-zero are erasures (pruned), masked to zero. Returns the erasures.
        func subtract(rows range: Range<Int>, from block: UnsafeMutableBufferPointer<Float>) throws -> Int {
            let n = transposed ? rows : cols
            var erased = 0
            func apply(_ r: (Int) -> Float) { erased += Residual.subtract(count: block.count, reference: r, from: block) }
            if !transposed {
                // Rows the reference does not have (a grown vocabulary) carry no mark: they are left out (zeroed).
                let available = ((range.lowerBound + rowOffset)..<(range.upperBound + rowOffset)).clamped(to: 0..<rows)
                var buf = [Float](repeating: 0, count: block.count)
                if !available.isEmpty {
                    try buf.withUnsafeMutableBufferPointer {
                        try source.decodeRows(named: name, rows: available, into: UnsafeMutableBufferPointer(rebasing: $0[0..<(available.count * n)]))
                    }
                }
                let known = available.count * n
                apply { buf[$0] }
                for i in known..<block.count { block[i] = 0 }
            } else {
                if full == nil { full = try source.decodeFloats(named: name) }
                let f = full!
                // suspect (r, c) ↔ reference (c, r)
                apply { i in let r = range.lowerBound + i / n, c = i % n; return f[c * cols + r] }
            }
            return erased
        }
    }

    /// 32×32 projection `U_rᵀ Z_j[rowList]` for a tile whose rows are `rowList` (suspect rows, in marked order;
    /// a negative entry is a row of the tile the suspect lacks, read as zero).
    static func tile(_ p: Projection, rows rowList: [Int], column j: Int, tiles: TileCarriers) -> [Float] {
        let r = rowList.count
        var gathered = [Float](repeating: 0, count: r * a)
        let zs = p.column(j)
        for (k, row) in rowList.enumerated() where row >= 0 {
            for c in 0..<a { gathered[k * a + c] = zs[row * a + c] }
        }
        return gathered.withUnsafeBufferPointer { product(tiles, rows: r, $0.baseAddress!) }
    }

    /// 32×32 `U_rᵀ Z` for r consecutive rows of Z (r×32, row-major) at `z`.
    static func product(_ tiles: TileCarriers, rows r: Int, _ z: UnsafePointer<Float>) -> [Float] {
        var y = [Float](repeating: 0, count: a * a)
        tiles.carrier(r).storage.withUnsafeBufferPointer { us in
            y.withUnsafeMutableBufferPointer { ys in
                BLAS.gemm(m: a, n: a, k: r, a: us.baseAddress!, lda: a, transA: .transposed, b: z, ldb: a,
                          c: ys.baseAddress!, ldc: a)
            }
        }
        return y
    }

    /// The projection of stored tile (i, j), computed once.
    final class StoredTiles {
        let p: Projection
        let tiles: TileCarriers
        private let tilesAcross: Int
        /// Tile (i, j) at i·tilesAcross + j.
        private var cache: [[Float]?]
        /// False once `compact()` dropped the column projections: only stored tiles remain.
        var hasProjection: Bool { p.buffer != nil }
        /// The same matrix's tiles on grids shifted by a pad (`TileDetector.columnPads`), for column slices off the grid.
        var shifted: [Int: StoredTiles] = [:]
        init(_ p: Projection, tiles: TileCarriers) {
            self.p = p; self.tiles = tiles
            tilesAcross = TileCarriers.tiles(p.cols)
            cache = [[Float]?](repeating: nil, count: TileCarriers.tiles(p.rows) * tilesAcross)
        }
        /// Stored tile (i, j) divided by its norm (empty when the norm is zero or not finite: no evidence).
        func tile(_ i: Int, _ j: Int) -> [Float] {
            if let y = cache[i * tilesAcross + j] { return y }
            precondition(hasProjection, "tile (\(i), \(j)) was not kept")
            let r = TileCarriers.extent(i, of: p.rows)
            // The tile's rows are consecutive in the column projection: read in place.
            let y = TileDetector.unit(TileDetector.product(tiles, rows: r, UnsafePointer(p.column(j) + i * g * a)))
            cache[i * tilesAcross + j] = y
            return y
        }
        /// Computes every stored tile and drops the column projections: what stays is a 32×32 tile per 128×128
        /// weights (1/16 of the matrix in floats) instead of 1/4 of it.
        func compact() {
            for i in 0..<TileCarriers.tiles(p.rows) { for j in 0..<tilesAcross { _ = tile(i, j) } }
            p.drop()
            for s in shifted.values { s.compact() }
        }
    }

    /// y/‖y‖, or empty when ‖y‖ is zero or not finite.
    static func unit(_ y: [Float]) -> [Float] {
        let norm = BLAS.nrm2(y)
        guard norm > 0, norm.isFinite else { return [] }
        let inverse = 1 / norm
        return y.map { $0 * inverse }
    }

    static func transpose(_ y: [Float]) -> [Float] {
        guard !y.isEmpty else { return y }
        var t = [Float](repeating: 0, count: a * a)
        for r in 0..<a { for c in 0..<a { t[c * a + r] = y[r * a + c] } }
        return t
    }

    /// Hypotheses worth trying for a stored m×n matrix.
    /// Interleaved and rotary readings use the head sizes `headSizes` (the suspect's own, when it ships a config).
    /// The head sizes tried when the suspect does not say its own: the common ones.
    static let defaultHeadSizes = [64, 128]

    static func hypotheses(rows m: Int, cols n: Int, headSizes: [Int] = defaultHeadSizes) -> [TileHypothesis] {
        var out: [TileHypothesis] = []
        for orientation in [TileHypothesis.Orientation.stored, .transposed] {
            let (rm, rn) = orientation == .stored ? (m, n) : (n, m) // the marked matrix as read
            out.append(TileHypothesis(orientation: orientation, layout: .offset(rowTiles: 0, columnTiles: 0)))
            // Slices s of K ≤ 8 cut on tile boundaries (model-parallel shards): offsets s·(size/G) along one axis.
            if rm % g == 0 { for s in 1..<8 { out.append(.init(orientation: orientation, layout: .offset(rowTiles: s * rm / g, columnTiles: 0))) } }
            // Off the grid (a 384-row matrix cut in two starts its second half at row 192): stored rows only.
            else if orientation == .stored { for s in 1..<8 { out.append(.init(orientation: .stored, layout: .rowShift(rows: s * rm))) } }
            if rn % g == 0 { for s in 1..<8 { out.append(.init(orientation: orientation, layout: .offset(rowTiles: 0, columnTiles: s * rn / g))) } }
            // Off the grid (a 704-column shard of a 1408-wide down_proj starts at column 704): stored columns only.
            else if orientation == .stored { for s in 1..<8 { out.append(.init(orientation: .stored, layout: columnSlice(at: s * rn))) } }
            // Fused row blocks: gate+up, q+k+v (equal or with grouped-query k/v), each block a matrix of its own.
            var splits: [[Int]] = []
            if rm % 2 == 0 { splits.append([rm / 2, rm / 2]) }
            if rm % 3 == 0 { splits.append([rm / 3, rm / 3, rm / 3]) }
            if rm > rn, (rm - rn) % 2 == 0, rm != 3 * rn { splits.append([rn, (rm - rn) / 2, (rm - rn) / 2]) }
            for s in splits where s.allSatisfy({ $0 > 0 }) {
                // Transposed readings reuse stored tiles, so their blocks must start on tile boundaries.
                if orientation == .transposed, s.dropLast().reduce(into: [0], { $0.append($0.last! + $1) }).contains(where: { $0 % g != 0 }) { continue }
                out.append(.init(orientation: orientation, layout: .blocks(s)))
            }
            guard orientation == .stored else { continue }
            for hd in headSizes where rm % (3 * hd) == 0 { out.append(.init(orientation: .stored, layout: .interleaved(headDim: hd, parts: 3))) }
            for hd in headSizes where rm % hd == 0 { out.append(.init(orientation: .stored, layout: .metaRotary(headDim: hd))) }
        }
        return out
    }

    /// A column slice starting at marked column `d`: a tile offset on the grid, a shifted grid off it.
    static func columnSlice(at d: Int) -> TileHypothesis.Layout {
        d % g == 0 ? .offset(rowTiles: 0, columnTiles: d / g) : .columnShift(pad: d % g, columnTiles: d / g)
    }

    /// The grid shifts a matrix `n` columns wide is projected on besides its own: those of the column slices s·n,
    /// s = 1 ..< 8, that fall off the tile grid (none when n is a multiple of 128).
    static func columnPads(_ n: Int) -> [Int] {
        n % g == 0 ? [] : Set((1..<8).map { $0 * n % g }).subtracting([0]).sorted()
    }

    /// The tiles of a stored matrix under `h`, restricted to positions that `keep` accepts.
    static func scores(_ stored: StoredTiles, _ h: TileHypothesis, keep: (Position) -> Bool) -> [TileScore] {
        let p = stored.p
        let (m, n) = (p.rows, p.cols)
        var out: [TileScore] = []
        // Every tile handed in is a unit vector already (or empty: no evidence).
        func add(_ pos: Position, _ y: [Float], _ r: Int, _ c: Int) {
            guard !y.isEmpty else { return }
            out.append(TileScore(position: pos, weight: Double(r * c).squareRoot(), unit: y))
        }
        switch (h.orientation, h.layout) {
        case let (.stored, .offset(dr, dc)):
            for i in 0..<TileCarriers.tiles(m) {
                for j in 0..<TileCarriers.tiles(n) {
                    let pos = Position(i: i + dr, j: j + dc)
                    guard keep(pos) else { continue }
                    add(pos, stored.tile(i, j), TileCarriers.extent(i, of: m), TileCarriers.extent(j, of: n))
                }
            }
        case let (.transposed, .offset(dr, dc)):
            // Marked matrix W = Xᵀ: its tile (q, s) is stored tile (s, q) transposed.
            for i in 0..<TileCarriers.tiles(m) {
                for j in 0..<TileCarriers.tiles(n) {
                    let pos = Position(i: j + dr, j: i + dc)
                    guard keep(pos) else { continue }
                    add(pos, transpose(stored.tile(i, j)), TileCarriers.extent(j, of: n), TileCarriers.extent(i, of: m))
                }
            }
        case let (.transposed, .blocks(sizes)):
            var start = 0 // in W's rows = stored columns, on tile boundaries
            for size in sizes {
                for q in 0..<TileCarriers.tiles(size) {
                    let sj = start / g + q
                    for i in 0..<TileCarriers.tiles(m) {
                        let pos = Position(i: q, j: i)
                        guard keep(pos), sj < TileCarriers.tiles(n) else { continue }
                        add(pos, transpose(stored.tile(i, sj)), TileCarriers.extent(sj, of: n), TileCarriers.extent(i, of: m))
                    }
                }
                start += size
            }
        case let (.stored, .columnShift(pad, dc)):
            // The projection on the grid shifted by `pad`: its column tile j holds suspect columns j·G − pad ..<
            // (j + 1)·G − pad, which are marked tile j + dc (or the part of it the suspect has).
            guard let shifted = stored.shifted[pad] else { break }
            for i in 0..<TileCarriers.tiles(m) {
                for j in 0..<TileCarriers.tiles(n + pad) {
                    let pos = Position(i: i, j: j + dc)
                    guard keep(pos) else { continue }
                    let c = min(n, (j + 1) * g - pad) - max(0, j * g - pad)
                    add(pos, shifted.tile(i, j), TileCarriers.extent(i, of: m), c)
                }
            }
        case let (.stored, .rowShift(d)):
            // Marked tile i holds marked rows i·G ..< i·G + G; those the suspect has are its rows ρ − d.
            for i in (d / g)...((d + m - 1) / g) {
                let rowList = (0..<g).map { t in i * g + t - d < m ? i * g + t - d : -1 }
                let r = rowList.filter { $0 >= 0 }.count
                for j in 0..<TileCarriers.tiles(n) {
                    let pos = Position(i: i, j: j)
                    guard keep(pos) else { continue }
                    add(pos, unit(tile(p, rows: rowList, column: j, tiles: stored.tiles)), r, TileCarriers.extent(j, of: n))
                }
            }
        case (.stored, _):
            // Row maps: each block is a list of suspect rows in the marked matrix's order.
            for rowsOfBlock in rowMaps(h.layout, rows: m) {
                let mb = rowsOfBlock.count
                for i in 0..<TileCarriers.tiles(mb) {
                    let r = TileCarriers.extent(i, of: mb)
                    let rowList = Array(rowsOfBlock[(i * g)..<(i * g + r)])
                    let aligned = rowList.first! % g == 0 && rowList.count == TileCarriers.extent(rowList.first! / g, of: m)
                        && zip(rowList, rowList.dropFirst()).allSatisfy { $1 == $0 + 1 }
                    for j in 0..<TileCarriers.tiles(n) {
                        let pos = Position(i: i, j: j)
                        guard keep(pos) else { continue }
                        let y = aligned ? stored.tile(rowList.first! / g, j) : unit(tile(p, rows: rowList, column: j, tiles: stored.tiles))
                        add(pos, y, r, TileCarriers.extent(j, of: n))
                    }
                }
            }
        default:
            break
        }
        return out
    }

    /// Whether every tile `h` reads is a stored tile (or its transpose), so no row gathering is needed.
    static func isTileAligned(_ h: TileHypothesis, rows m: Int) -> Bool {
        if h.orientation == .transposed { return true }
        if case .rowShift = h.layout { return false }
        if case .columnShift = h.layout { return true } // tiles of the shifted grid's projection, kept like stored tiles
        return rowMaps(h.layout, rows: m).allSatisfy { block in
            stride(from: 0, to: block.count, by: g).allSatisfy { i in
                block[i] % g == 0 && (i..<min(block.count, i + g)).allSatisfy { block[$0] == block[i] + ($0 - i) }
                    && min(block.count, i + g) - i == TileCarriers.extent(block[i] / g, of: m)
            }
        }
    }

    /// Suspect rows of each block, in the marked matrix's row order.
    static func rowMaps(_ layout: TileHypothesis.Layout, rows m: Int) -> [[Int]] {
        switch layout {
        case .offset, .rowShift, .columnShift:
            return [Array(0..<m)]
        case let .blocks(sizes):
            var start = 0
            return sizes.map { s in defer { start += s }; return Array(start..<(start + s)) }
        case let .interleaved(hd, parts):
            let heads = m / (parts * hd)
            return (0..<parts).map { (b: Int) -> [Int] in
                var rows: [Int] = []
                for t in 0..<heads {
                    let first: Int = (parts * t + b) * hd
                    rows.append(contentsOf: first..<(first + hd))
                }
                return rows
            }
        case let .metaRotary(hd):
            // Marked (HF) row ρ = t·hd + e·hd/2 + k is stored (Meta) row t·hd + 2k + e.
            return [(0..<m).map { rho in
                let t = rho / hd, within = rho % hd, e = within / (hd / 2), k = within % (hd / 2)
                return t * hd + 2 * k + e
            }]
        }
    }
}

extension TileDetector {
    /// What v2 detection found.
    struct Outcome {
        var combinedZ: Double
        var tensors: [TensorScore]
        var skipped: [SkippedTensor]
        var pilotPositions: Int
        var scoredPositions: Int
        var hypothesesTried: Int
    }

    /// A suspect matrix to check, with the reference matrix paired with it (informed mode).
    struct Candidate {
        var tensor: SourceTensor
        var reference: (name: String, shape: [Int], transposed: Bool, rowOffset: Int)?
    }

    /// Detects the v2 mark of `secret` in `suspect`: docs/FORMAT.md's steps, one function each.
    static func detect(suspect: any TensorSource, reference: (any TensorSource)?, secret: [UInt8], options: DetectOptions,
                       progress: @escaping (String, Int, Int) -> Void) throws -> Outcome {
        try detect(suspect: suspect, reference: reference, secret: secret, options: options,
                   readTransposed: [options.readTransposed], progress: progress)[0]
    }

    /// The same, once per entry of `readTransposed` (the default orientation as the pilots choose it, or forced to
    /// "transposed"), from one projection and one pilot pass: each outcome is the one `detect` gives with
    /// `options.readTransposed` set so, to the last bit.
    static func detect(suspect: any TensorSource, reference: (any TensorSource)?, secret: [UInt8], options: DetectOptions,
                       readTransposed: [Bool], progress: @escaping (String, Int, Int) -> Void) throws -> [Outcome] {
        let tiles = try TileCarriers(secret: secret)
        let headSizes = ShippedConfig.attentionHeadSize(near: suspect.path).map { [$0] } ?? defaultHeadSizes
        let (candidates, skipped) = try selectCandidates(suspect: suspect, reference: reference, selection: options.selection)
        let projections = Projections(candidates: candidates, suspect: suspect, reference: reference, tiles: tiles,
                                      scoringPasses: readTransposed.count, progress: progress)
        let patterns = PatternCache(tiles)
        let pilots = try scorePilots(candidates, projections, patterns, headSizes: headSizes, workers: options.workers)
        let groups = Set(candidates.map(\.tensor.shape))
        return try readTransposed.enumerated().map { pass, transposed in
            let choice = chooseReadings(candidates, pilots, headSizes: headSizes, readTransposed: transposed)
            let scored = try scoreChosenReadings(candidates, choice, projections, patterns, workers: options.workers,
                                                 lastPass: pass == readTransposed.count - 1)
            return Outcome(combinedZ: pooledZ(scored.pooled, patterns), tensors: scored.evidence, skipped: skipped,
                           pilotPositions: scored.pilotPositions, scoredPositions: scored.pooled.count,
                           hypothesesTried: groups.map { hypotheses(rows: $0[0], cols: $0[1], headSizes: headSizes).count }.max() ?? 0)
        }
    }

    /// Step 1, candidates: the selected matrices of the suspect, paired (informed) with the reference's by content;
    /// matrices that cannot be read, or found no partner, are reported.
    static func selectCandidates(suspect: any TensorSource, reference: (any TensorSource)?,
                                 selection: TensorSelection) throws -> (candidates: [Candidate], skipped: [SkippedTensor]) {
        let selected = suspect.sourceTensors.filter { selection.selectsGeometry($0) }
        var skipped: [SkippedTensor] = []
        // Matrices the selection would take were they decodable (a ggml type this version does not know): reported.
        for t in suspect.sourceTensors where !t.isFloating {
            var decodable = t
            decodable.isFloating = true
            if selection.selectsGeometry(decodable) {
                skipped.append(.init(name: t.name, reason: "stored as \(t.storage), which this version of WeightMark cannot decode"))
            }
        }
        guard let reference else { return (selected.map { Candidate(tensor: $0, reference: nil) }, skipped) }
        let candidates = try pairByContent(selected, suspect: suspect, reference: reference)
        for c in candidates where c.reference == nil {
            skipped.append(.init(name: c.tensor.name, reason: "no matrix of the reference matches it (name, shape or content): scored blind"))
        }
        let used = Set(candidates.compactMap { $0.reference?.name })
        for r in reference.sourceTensors where selection.selectsGeometry(r) && !used.contains(r.name) {
            skipped.append(.init(name: r.name, reason: "missing from the suspect (no suspect matrix matches it)"))
        }
        return (candidates, skipped)
    }

    /// Step 2, projection, for the two passes over the candidates: each candidate's column tiles projected once; the
    /// identity-tile caches are kept from the pilot pass to the scoring pass while they fit in `cacheBudget`
    /// (beyond it the scoring pass projects again). Used from `Parallel`'s workers: the cache, the count of
    /// finished passes and the calls of `progress` go through one lock.
    final class Projections {
        static let cacheBudget = 512 << 20
        let candidates: [Candidate]
        let suspect: any TensorSource
        let reference: (any TensorSource)?
        let tiles: TileCarriers
        let progress: (String, Int, Int) -> Void
        let keepCaches: Bool
        /// Scoring passes after the pilot pass (each reads every candidate's projection).
        let scoringPasses: Int
        /// Column projections' buffers, reused from matrix to matrix (a model repeats a few shapes).
        let buffers = ByteBufferPool(keepBytes: 64 << 20)
        private let shared = Locked((done: 0, caches: [Int: StoredTiles]()))

        init(candidates: [Candidate], suspect: any TensorSource, reference: (any TensorSource)?, tiles: TileCarriers,
             scoringPasses: Int = 1, progress: @escaping (String, Int, Int) -> Void) {
            (self.candidates, self.suspect, self.reference, self.tiles, self.progress) = (candidates, suspect, reference, tiles, progress)
            self.scoringPasses = scoringPasses
            let tileBytes = candidates.reduce(0) { total, c in
                let (m, n) = (c.tensor.shape[0], c.tensor.shape[1])
                let grids = 1 + (c.reference == nil ? columnPads(n).count : 0)
                return total + grids * TileCarriers.tiles(m) * (TileCarriers.tiles(n) + 1) * a * a * 4
            }
            keepCaches = tileBytes <= Self.cacheBudget
            progress("", 0, (1 + scoringPasses) * candidates.count)
        }

        /// Candidate `k`'s projection: the cached one, or a new one (the tensors' pages then released).
        func projection(_ k: Int) throws -> StoredTiles {
            if let c = shared.withLock({ $0.caches[k] }) { return c }
            return try freshProjection(k)
        }

        private func freshProjection(_ k: Int) throws -> StoredTiles {
            let c = candidates[k]
            let (m, n) = (c.tensor.shape[0], c.tensor.shape[1])
            let ref = c.reference.map { r in
                ReferenceRows(source: DecodedRows.rowBlocks(of: reference!), name: r.name, rows: r.shape[0], cols: r.shape[1],
                              transposed: r.transposed, rowOffset: r.rowOffset)
            }
            // Blind, a matrix whose width is off the tile grid may be a column shard: its shifted grids come from the same read.
            let pads = [0] + (c.reference == nil ? columnPads(n) : [])
            let ps = try project(name: c.tensor.name, rows: m, cols: n, pads: pads, suspect: DecodedRows.rowBlocks(of: suspect),
                                 reference: ref, tiles: tiles, pool: buffers)
            suspect.releaseTensor(named: c.tensor.name)
            if let r = c.reference { reference?.releaseTensor(named: r.name) }
            let stored = StoredTiles(ps[0], tiles: tiles)
            for (pad, p) in zip(pads, ps).dropFirst() { stored.shifted[pad] = StoredTiles(p, tiles: tiles) }
            return stored
        }

        /// The pilot pass is done with candidate `k`: its projection is kept (compacted) for the scoring pass if
        /// caches fit.
        func pilotsDone(_ k: Int, _ stored: StoredTiles) {
            if keepCaches { stored.compact() }
            advance(k) { if self.keepCaches { $0.caches[k] = stored } }
        }

        /// A scoring pass takes candidate `k`'s projection (from the cache, or projected again); the last pass
        /// drops it from the cache.
        func takeForScoring(_ k: Int, lastPass: Bool) throws -> StoredTiles {
            let stored = try projection(k)
            advance(k) { if lastPass { $0.caches[k] = nil } }
            return stored
        }

        /// Candidate `k` projected again in full (row maps off the tile grid need the column projections that
        /// `compact()` dropped); the compacted tiles stay cached for the passes after this one.
        func reproject(_ k: Int) throws -> StoredTiles { try freshProjection(k) }

        private func advance(_ k: Int, _ update: (inout (done: Int, caches: [Int: StoredTiles])) -> Void) {
            shared.withLock {
                update(&$0)
                $0.done += 1
                progress(candidates[k].tensor.name, $0.done, (1 + scoringPasses) * candidates.count)
            }
        }
    }

    /// Pilot sums of every hypothesis of every candidate (step 4), and the pilot Z of sets of them.
    struct PilotTable {
        var scores: [[(h: TileHypothesis, num: Double, den2: Double)]]

        /// The pilot Z of the candidates `indices`, each under `h`.
        func z(_ indices: [Int], _ h: TileHypothesis) -> Double { z(indices.map { ($0, h) }) }

        /// The pilot Z of candidates each under its own hypothesis.
        func z(_ pairs: [(Int, TileHypothesis)]) -> Double {
            var num = 0.0, den2 = 0.0
            for (k, h) in pairs { if let e = scores[k].first(where: { $0.h == h }) { num += e.num; den2 += e.den2 } }
            return den2 > 0 ? num / den2.squareRoot() : 0
        }
    }

    /// Step 4, pilots: every hypothesis of every candidate scored on its pilot positions (the first pass).
    static func scorePilots(_ candidates: [Candidate], _ projections: Projections, _ patterns: PatternCache,
                            headSizes: [Int], workers: Int) throws -> PilotTable {
        PilotTable(scores: try Parallel.withSingleThreadedBLAS {
            try Parallel.map(count: candidates.count, workers: workers) { k in
                let stored = try projections.projection(k)
                let shape = candidates[k].tensor.shape
                let result = hypotheses(rows: shape[0], cols: shape[1], headSizes: headSizes).map { h -> (h: TileHypothesis, num: Double, den2: Double) in
                    var num = 0.0, den2 = 0.0
                    for s in scores(stored, h, keep: { isPilot($0.i, $0.j) }) {
                        num += s.weight * BLAS.dot(s.unit, patterns.pattern(s.position))
                        den2 += s.weight * s.weight
                    }
                    return (h, num, den2)
                }
                projections.pilotsDone(k, stored)
                return result
            }
        })
    }

    static let transposedIdentity = TileHypothesis(orientation: .transposed, layout: .offset(rowTiles: 0, columnTiles: 0))

    /// Step 4, the choice of a reading per candidate, from the pilots alone: default orientation, model-parallel
    /// shard, per shape, per name pattern.
    static func chooseReadings(_ candidates: [Candidate], _ pilots: PilotTable, headSizes: [Int], readTransposed: Bool) -> [TileHypothesis] {
        let groups = Dictionary(grouping: candidates.indices, by: { candidates[$0].tensor.shape })
        let orientation = defaultOrientation(candidates, groups, pilots, readTransposed: readTransposed)
        let shard = orientation.global || orientation.dense ? [:] : modelParallelShard(candidates, groups, pilots)
        var shapeChoice: [[Int]: TileHypothesis] = [:]
        for (shape, members) in groups {
            let base = orientation.global || (orientation.dense && shape != orientation.largest) ? transposedIdentity
                : shard[shape] ?? TileHypothesis.identity
            shapeChoice[shape] = perShape(base, shape: shape, members, pilots, headSizes: headSizes)
        }
        return perNamePattern(candidates, shapeChoice, pilots, headSizes: headSizes)
    }

    /// "Default orientation". Orientation is a property of the framework that saved the model: when the pilots of
    /// all matrices — or of all but the largest group, since frameworks that store dense kernels transposed (Flax,
    /// Keras, GPT-2's Conv1D) keep the embedding as it is — prefer "transposed" by `ReadingMargin.transposedModel`,
    /// transposition becomes the default.
    static func defaultOrientation(_ candidates: [Candidate], _ groups: [[Int]: [Int]], _ pilots: PilotTable,
                                   readTransposed: Bool) -> (global: Bool, dense: Bool, largest: [Int]?) {
        func prefersTransposed(_ indices: [Int]) -> Bool {
            pilots.z(indices, transposedIdentity) > pilots.z(indices, .identity) + ReadingMargin.transposedModel
        }
        let largest = groups.max { a, b in a.value.count * a.key.reduce(1, *) < b.value.count * b.key.reduce(1, *) }?.key
        let allButLargest = candidates.indices.filter { candidates[$0].tensor.shape != largest }
        let global = readTransposed || prefersTransposed(Array(candidates.indices))
        return (global, global || prefersTransposed(allButLargest), largest)
    }

    /// The shard reading of a matrix of `shape`: shard s along rows or columns starts at s times the suspect's
    /// extent on that axis (a row shift or a shifted column grid when that is off the tile grid).
    static func shardHypothesis(_ shape: [Int], rows: Bool, _ s: Int) -> TileHypothesis {
        let extent = rows ? shape[0] : shape[1]
        if rows, extent % g != 0 { return TileHypothesis(orientation: .stored, layout: .rowShift(rows: s * extent)) }
        return TileHypothesis(orientation: .stored, layout: rows ? .offset(rowTiles: s * extent / g, columnTiles: 0) : columnSlice(at: s * extent))
    }

    /// "Model-parallel shard". A tensor-parallel shard s cuts every matrix at s times its own extent, each along one
    /// axis: every matrix by rows, every one by columns, or — as Megatron and Meta cut them — each by its role
    /// (`LayoutHints.shardAxis`: q/k/v/gate/up and embeddings by rows, o/down by columns; a shape takes the axis most
    /// of its matrices' names give, shapes whose names say nothing are left out). Pooled over every matrix it applies
    /// to, the cut with the largest pooled pilot Z gives those shapes their default reading when that Z is at least
    /// `ReadingMargin.shardMinimum` and above the same matrices' stored and transposed readings (a shard that is only
    /// noise would raise the bar every group's true reading has to clear, so it must beat both whole-matrix readings).
    /// Returns the default reading of each shape it applies to.
    static func modelParallelShard(_ candidates: [Candidate], _ groups: [[Int]: [Int]], _ pilots: PilotTable) -> [[Int]: TileHypothesis] {
        var roleAxis: [[Int]: Bool] = [:]
        for (shape, members) in groups {
            let axes = members.compactMap { LayoutHints.shardAxis(for: candidates[$0].tensor.name) }
            let rows = axes.filter { $0 }.count
            if !axes.isEmpty, rows * 2 != axes.count { roleAxis[shape] = rows * 2 > axes.count }
        }
        let cuts: [([Int]) -> Bool?] = [{ _ in true }, { _ in false }, { roleAxis[$0] }]
        var best: [[Int]: TileHypothesis] = [:]
        var bestZ = -Double.infinity
        for cut in cuts {
            for s in 1..<ReadingMargin.shardCount {
                var byShape: [[Int]: TileHypothesis] = [:]
                for shape in groups.keys { if let rows = cut(shape) { byShape[shape] = shardHypothesis(shape, rows: rows, s) } }
                // In candidate order, so that the pooled sums do not depend on the dictionary's hashing seed.
                let applies = candidates.indices.compactMap { k in byShape[candidates[k].tensor.shape].map { (k, $0) } }
                guard !applies.isEmpty else { continue }
                let z = pilots.z(applies)
                let stored = pilots.z(applies.map { ($0.0, TileHypothesis.identity) })
                let transposed = pilots.z(applies.map { ($0.0, transposedIdentity) })
                if z >= ReadingMargin.shardMinimum && z > stored && z > transposed && z > bestZ { bestZ = z; best = byShape }
            }
        }
        return best
    }

    /// "Per shape": the largest pilot Z less the hypothesis' penalty, ties to the base.
    static func perShape(_ base: TileHypothesis, shape: [Int], _ members: [Int], _ pilots: PilotTable, headSizes: [Int]) -> TileHypothesis {
        var best = base, bestScore = pilots.z(members, base)
        for h in hypotheses(rows: shape[0], cols: shape[1], headSizes: headSizes) where h != base {
            let score = pilots.z(members, h) - (h == .identity || h == transposedIdentity ? ReadingMargin.wholeMatrix : h.penalty)
            if score > bestScore { best = h; bestScore = score }
        }
        return best
    }

    /// "Per name pattern". Within a shape, matrices whose names differ only in numbers (the same projection in every
    /// layer) may override the shape's choice when their own pilots prefer another hypothesis by
    /// `ReadingMargin.subgroupOverride`: q and o projections share a shape, but only q is rotary-permuted. A name that
    /// announces a layout (`qkv_proj`, `gate_up_proj`, `wq`, …) makes the best of the readings it announces the
    /// subgroup's default. Names only steer the choice; they never enter Z.
    static func perNamePattern(_ candidates: [Candidate], _ shapeChoice: [[Int]: TileHypothesis], _ pilots: PilotTable,
                               headSizes: [Int]) -> [TileHypothesis] {
        let subgroups = Dictionary(grouping: candidates.indices, by: { SubgroupKey(shape: candidates[$0].tensor.shape, name: Self.namePattern(candidates[$0].tensor.name)) })
        var choiceOf = [TileHypothesis](repeating: .identity, count: candidates.count)
        for (key, members) in subgroups {
            let all = hypotheses(rows: key.shape[0], cols: key.shape[1], headSizes: headSizes)
            var coarse = shapeChoice[key.shape]!
            for (n, h) in LayoutHints.readings(for: key.name, among: all, rows: key.shape[0], cols: key.shape[1],
                                               orientation: coarse.orientation).enumerated()
            where n == 0 || pilots.z(members, h) > pilots.z(members, coarse) { coarse = h }
            var best = coarse, bestScore = pilots.z(members, coarse) + ReadingMargin.subgroupOverride
            for h in all where h != coarse {
                let score = pilots.z(members, h)
                if score > bestScore { best = h; bestScore = score }
            }
            for k in members { choiceOf[k] = best }
        }
        return choiceOf
    }

    /// Step 5, the second pass: the non-pilot positions of every candidate under its chosen reading, pooled by
    /// position, with each candidate's own share reported.
    static func scoreChosenReadings(_ candidates: [Candidate], _ choiceOf: [TileHypothesis], _ projections: Projections,
                                    _ patterns: PatternCache, workers: Int, lastPass: Bool = true) throws
        -> (pooled: [Position: [Double]], evidence: [TensorScore], pilotPositions: Int) {
        let total = candidates.count
        var pooled: [Position: [Double]] = [:]
        var evidence: [TensorScore] = []
        var pilotPositions = Set<Position>()
        let chunk = max(1, workers * 2)
        var start = 0
        while start < total {
            let end = min(total, start + chunk)
            let results: [(scores: [TileScore], pilots: [Position], erased: Int)] = try Parallel.withSingleThreadedBLAS {
                try Parallel.map(count: end - start, workers: workers) { offset in
                    let k = start + offset
                    var stored = try projections.takeForScoring(k, lastPass: lastPass)
                    let h = choiceOf[k]
                    // Row maps that do not fall on tile boundaries gather rows from the column projections.
                    if !stored.hasProjection, !isTileAligned(h, rows: stored.p.rows) { stored = try projections.reproject(k) }
                    let pilotsSeen = scores(stored, h, keep: { isPilot($0.i, $0.j) }).map(\.position)
                    return (scores(stored, h, keep: { !isPilot($0.i, $0.j) }), pilotsSeen, stored.p.erased)
                }
            }
            for (offset, r) in results.enumerated() {
                let c = candidates[start + offset]
                var num = 0.0, den2 = 0.0
                for s in r.scores {
                    pooled[s.position, default: [Double](repeating: 0, count: a * a)].withUnsafeMutableBufferPointer { v in
                        for e in 0..<(a * a) { v[e] += s.weight * Double(s.unit[e]) }
                    }
                    num += s.weight * BLAS.dot(s.unit, patterns.pattern(s.position))
                    den2 += s.weight * s.weight
                }
                pilotPositions.formUnion(r.pilots)
                evidence.append(TensorScore(name: c.tensor.name, shape: c.tensor.shape, weight: den2.squareRoot(),
                                               correlation: num, norm: den2.squareRoot(), erased: r.erased,
                                               hypothesis: choiceOf[start + offset].description,
                                               pairedWith: c.reference.map { $0.transposed ? "\($0.name) (transposed)" : $0.rowOffset > 0 ? "\($0.name) (rows from \($0.rowOffset))" : $0.name }))
            }
            start = end
        }
        return (pooled, evidence, pilotPositions.count)
    }

    /// Step 5's statistic: Z = Σ_p ⟨c_p, S_p⟩ / sqrt(Σ_p ‖c_p‖²), summed in position order so that Z does not depend
    /// (to the last bit) on the dictionary's hashing seed.
    static func pooledZ(_ pooled: [Position: [Double]], _ patterns: PatternCache) -> Double {
        var num = 0.0, den2 = 0.0
        for (p, c) in pooled.sorted(by: { ($0.key.i, $0.key.j) < ($1.key.i, $1.key.j) }) {
            let s = patterns.pattern(p)
            for e in 0..<(a * a) { num += c[e] * Double(s[e]) }
            den2 += c.reduce(0) { $0 + $1 * $1 }
        }
        return den2 > 0 ? num / den2.squareRoot() : 0
    }

    struct SubgroupKey: Hashable { var shape: [Int]; var name: String }

    /// A name with its digit runs replaced by "#": the same projection in every layer shares a pattern.
    static func namePattern(_ name: String) -> String {
        var out = "", inDigits = false
        for ch in name {
            if ch.isASCII && ch.isNumber { if !inDigits { out.append("#") }; inDigits = true } else { out.append(ch); inDigits = false }
        }
        return out
    }

    /// Key-free pairing of suspect and reference matrices (informed mode): the reference matrix of the same name if
    /// there is one (stored or transposed, whichever is closer); otherwise, among the reference matrices of the same
    /// shape, the transposed shape, or the same width (a vocabulary grown or cut), the one closest to the suspect on
    /// 16 sampled rows, if its relative difference is below 1.2 (an unrelated matrix differs by about √2). Never
    /// looks at the key, so the bound is unaffected.
    static func pairByContent(_ selected: [SourceTensor], suspect: any TensorSource, reference: any TensorSource) throws -> [Candidate] {
        let refs = reference.sourceTensors.filter { $0.shape.count == 2 && $0.isFloating && $0.shape[0] > 0 && $0.shape[1] > 0 }
        let suspectRows = DecodedRows.rowBlocks(of: suspect), referenceRows = DecodedRows.rowBlocks(of: reference)
        func picks(_ count: Int) -> [Int] { (0..<16).map { $0 * max(1, count / 16) % count } }
        func rows(_ source: any RowBlockDecodable, _ name: String, _ indices: [Int], width n: Int) throws -> [[Float]] {
            try indices.map { r in
                var row = [Float](repeating: 0, count: n)
                try row.withUnsafeMutableBufferPointer { try source.decodeRows(named: name, rows: r..<(r + 1), into: $0) }
                return row
            }
        }
        // Per reference matrix: sampled rows (indices from the suspect's height, for same-width pairs) are read
        // on demand; sampled columns (for transposed pairs) once, with one decode of the matrix.
        var columnSamples: [String: [[Float]]] = [:]
        func distance(_ a: [[Float]], _ b: [[Float]]) -> Double {
            var d2 = 0.0, r2 = 0.0
            for (x, y) in zip(a, b) {
                for i in 0..<min(x.count, y.count) { let d = Double(x[i] - y[i]); d2 += d * d; r2 += Double(y[i]) * Double(y[i]) }
            }
            return r2 > 0 ? (d2 / r2).squareRoot() : .infinity
        }
        var out: [Candidate] = []
        for t in selected {
            let (m, n) = (t.shape[0], t.shape[1])
            let idx = picks(m)
            let mine = try rows(suspectRows, t.name, idx, width: n)
            var best: (name: String, shape: [Int], transposed: Bool, rowOffset: Int, distance: Double)?
            // The reference matrix of the same name is taken whatever the difference (heavy attacks included), in
            // the orientation that fits better; other matrices only when close (unrelated ones differ by about √2).
            let sameName = refs.filter { $0.name == t.name }
            var limit = sameName.isEmpty ? 1.2 : Double.infinity
            func consider(_ r: SourceTensor, transposed: Bool, rowOffset: Int = 0, _ theirs: [[Float]]) {
                let d = distance(mine, theirs)
                if d < limit || (d == limit && r.name == t.name) { best = (r.name, r.shape, transposed, rowOffset, d); limit = d }
            }
            for r in sameName.isEmpty ? refs : sameName {
                if r.shape[1] == n {
                    // Same width: the same matrix, or rows appended or cut at the end (when the sampled rows exist in both).
                    if idx.allSatisfy({ $0 < r.shape[0] }) {
                        consider(r, transposed: false, try rows(referenceRows, r.name, idx, width: n))
                    }
                    // A model-parallel row shard s of a taller matrix: its rows start at s·m.
                    for s in 1..<8 where (s + 1) * m <= r.shape[0] {
                        consider(r, transposed: false, rowOffset: s * m, try rows(referenceRows, r.name, idx.map { $0 + s * m }, width: n))
                    }
                }
                if r.shape == [n, m] {
                    if columnSamples[r.name] == nil {
                        let all = try reference.decodeFloats(named: r.name)
                        reference.releaseTensor(named: r.name)
                        columnSamples[r.name] = idx.map { c in (0..<r.shape[0]).map { all[$0 * r.shape[1] + c] } }
                    }
                    consider(r, transposed: true, columnSamples[r.name]!)
                }
            }
            suspect.releaseTensor(named: t.name)
            out.append(Candidate(tensor: t, reference: best.map { ($0.name, $0.shape, $0.transposed, $0.rowOffset) }))
        }
        return out
    }

    /// S_p for every position, derived once.
    /// Sendable: `cache` is read and written only under `lock` (entries are immutable once stored); `tiles` is a `let`.
    final class PatternCache: @unchecked Sendable {
        private var cache: [Position: [Float]] = [:]
        private let lock = NSLock()
        let tiles: TileCarriers
        init(_ tiles: TileCarriers) { self.tiles = tiles }
        func pattern(_ p: Position) -> [Float] {
            if let s = lock.withLock({ cache[p] }) { return s }
            let s = tiles.pattern(row: p.i, column: p.j)
            lock.withLock { cache[p] = s }
            return s
        }
    }
}

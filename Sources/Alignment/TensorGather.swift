import LinearAlgebra
import TensorIO

/// A rewritten matrix described by where its rows or columns come from in the suspect, so an aligned suspect costs a
/// few index arrays instead of a float copy of every permuted matrix (about 8 GB for a 2B model).
///
/// Rows: output row j is the suspect's row `sources[j]` divided elementwise by `divisors[j]` (zeros when the source is
/// nil: a dropped unit). Columns: output column j is the sum over its list of the suspect's column `i` times `c`, in
/// list order (a permuted and rescaled unit, plus the duplicates merged into it). The float operations are those of a
/// dense rewrite, so both give bit-identical values.
public struct TensorGather: Sendable {
    public enum Sources: Sendable {
        case rows([Int?], divisors: [Float]?)
        case columns([[(column: Int, factor: Float)]])
    }

    /// Output shape [rows, columns].
    public let shape: [Int]
    /// Row or column count of the suspect's matrix along the gathered axis' other side: its column count for `rows`
    /// (equal to the output's), its column count for `columns`.
    public let sourceColumns: Int
    public let sources: Sources
    /// `columns` with exactly one source each (no duplicates merged): column and factor per output column.
    private let singleColumns: (columns: [Int], factors: [Float])?

    public init(shape: [Int], sourceColumns: Int, sources: Sources) {
        precondition(shape.count == 2)
        switch sources {
        case .rows(let s, let d): precondition(s.count == shape[0] && (d?.count ?? s.count) == s.count && sourceColumns == shape[1])
        case .columns(let s): precondition(s.count == shape[1])
        }
        self.shape = shape; self.sourceColumns = sourceColumns; self.sources = sources
        if case .columns(let s) = sources, s.allSatisfy({ $0.count == 1 }) {
            singleColumns = (s.map { $0[0].column }, s.map { $0[0].factor })
        } else {
            singleColumns = nil
        }
    }

    /// Output rows `rows`, reading the suspect's rows through `read(range, buffer)`.
    func decodeRows(_ rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>,
                    read: (Range<Int>, UnsafeMutableBufferPointer<Float>) throws -> Void) throws {
        let n = shape[1]
        precondition(rows.upperBound <= shape[0] && out.count == rows.count * n)
        switch sources {
        case .rows(let sources, let divisors):
            for (k, j) in rows.enumerated() {
                let row = UnsafeMutableBufferPointer(rebasing: out[(k * n)..<((k + 1) * n)])
                guard let i = sources[j] else { row.update(repeating: 0); continue }
                try read(i..<(i + 1), row)
                if let c = divisors?[j] { for t in 0..<n { row[t] /= c } }
            }
        case .columns(let sources):
            let m = sourceColumns
            var block = [Float](repeating: 0, count: rows.count * m)
            try block.withUnsafeMutableBufferPointer { b in
                try read(rows, b)
                if let (columns, factors) = singleColumns {
                    for k in 0..<rows.count {
                        let src = k * m, dst = k * n
                        for j in 0..<n { out[dst + j] = b[src + columns[j]] * factors[j] }
                    }
                    return
                }
                for k in 0..<rows.count {
                    let src = k * m, dst = k * n
                    for j in 0..<n {
                        var x: Float = 0
                        for (t, (i, c)) in sources[j].enumerated() { x = t == 0 ? b[src + i] * c : x + b[src + i] * c }
                        out[dst + j] = x
                    }
                }
            }
        }
    }

    /// Σ‖G − R‖² and Σ‖R‖² for the gathered matrix G from the suspect's matrix `m` held in memory, in blocks of rows
    /// (differences in single precision, sums in double), without holding G.
    func residualSums(from m: Matrix, against r: Matrix) -> (difference: Double, reference: Double) {
        precondition(m.cols == sourceColumns && r.rows == shape[0] && r.cols == shape[1])
        let n = shape[1], block = max(1, min(shape[0], (1 << 16) / max(1, n)))
        var buffer = [Float](repeating: 0, count: block * n)
        var num = 0.0, den = 0.0
        buffer.withUnsafeMutableBufferPointer { g in
            m.storage.withUnsafeBufferPointer { s in
                r.storage.withUnsafeBufferPointer { pr in
                    for start in stride(from: 0, to: shape[0], by: block) {
                        let rows = start..<min(shape[0], start + block), count = rows.count * n
                        let out = UnsafeMutableBufferPointer(rebasing: g[0..<count])
                        try! decodeRows(rows, into: out) { range, buffer in
                            _ = buffer.initialize(from: s[(range.lowerBound * m.cols)..<(range.upperBound * m.cols)])
                        }
                        let y = UnsafeBufferPointer(rebasing: pr[(start * n)..<(start * n + count)])
                        for k in 0..<count { out[k] -= y[k] }
                        let d = UnsafeBufferPointer(out)
                        num += BLAS.dot(d, d); den += BLAS.dot(y, y)
                    }
                }
            }
        }
        return (num, den)
    }

    /// The gathered matrix from the suspect's matrix held in memory.
    func applied(to m: Matrix) -> Matrix {
        precondition(m.cols == sourceColumns)
        var out = Matrix(rows: shape[0], cols: shape[1])
        out.storage.withUnsafeMutableBufferPointer { o in
            m.storage.withUnsafeBufferPointer { s in
                try! decodeRows(0..<shape[0], into: o) { range, buffer in
                    _ = buffer.initialize(from: s[(range.lowerBound * m.cols)..<(range.upperBound * m.cols)])
                }
            }
        }
        return out
    }
}

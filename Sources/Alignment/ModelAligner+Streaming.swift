import LinearAlgebra
import TensorIO

/// Per-group inner products of a suspect matrix with the reference's, gathered in one streamed pass over row blocks:
/// the "already aligned?" check and the fit residual without decoding or transposing whole matrices.
struct PairStatistics {
    /// Per group (a row, a column, or a head's block of rows or columns): ⟨s, r⟩, ‖s‖², ‖r‖².
    var dot: [Double]
    var suspectSquares: [Double]
    var referenceSquares: [Double]

    /// Cosine of group `g` of the suspect with the same group of the reference (0 when either is zero).
    func cosine(_ g: Int) -> Float {
        let ss = suspectSquares[g], rr = referenceSquares[g]
        return ss > 0 && rr > 0 ? Float(dot[g] / (ss * rr).squareRoot()) : 0
    }

    /// sqrt(Σ‖S − R‖² / Σ‖R‖²) over several matrices, from ‖S − R‖² = ‖S‖² + ‖R‖² − 2⟨S, R⟩.
    static func relativeResidual(_ all: [PairStatistics]) -> Double {
        var num = 0.0, den = 0.0
        for p in all {
            for g in p.dot.indices { num += p.suspectSquares[g] + p.referenceSquares[g] - 2 * p.dot[g]; den += p.referenceSquares[g] }
        }
        return den > 0 ? (max(0, num) / den).squareRoot() : 0
    }
}

extension ModelAligner.Workspace {
    enum Axis { case rows, columns }

    /// Rows `rows` of the suspect's matrix `name` as aligned so far.
    func readSuspect(_ name: String, rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws {
        if let o = overrides[name] {
            o.storage.withUnsafeBufferPointer { s in _ = out.initialize(from: s[(rows.lowerBound * o.cols)..<(rows.upperBound * o.cols)]) }
        } else if let g = gathers[name] {
            try g.decodeRows(rows, into: out) { range, buffer in try suspectRows.decodeRows(named: name, rows: range, into: buffer) }
        } else {
            try suspectRows.decodeRows(named: name, rows: rows, into: out)
        }
    }

    func readReference(_ name: String, rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws {
        try referenceRows.decodeRows(named: name, rows: rows, into: out)
    }

    /// Streams matrix `name` of the suspect and the reference (same shape, checked by the caller) in blocks of rows
    /// and accumulates ⟨s, r⟩, ‖s‖², ‖r‖² per group of `groupSize` consecutive rows or columns.
    /// - Complexity: one pass over both matrices, 2 × ~4 MB of buffers.
    func statistics(_ name: String, along axis: Axis, groupSize: Int) throws -> PairStatistics {
        guard let shape = shape(reference: name), shape.count == 2 else { throw TensorIOError.tensorNotFound(name: name, path: reference.path) }
        let (rows, cols) = (shape[0], shape[1])
        let groups = (axis == .rows ? rows : cols) / groupSize
        precondition(groups * groupSize == (axis == .rows ? rows : cols))
        var out = PairStatistics(dot: .init(repeating: 0, count: groups), suspectSquares: .init(repeating: 0, count: groups),
                                 referenceSquares: .init(repeating: 0, count: groups))
        let block = max(1, min(rows, (1 << 20) / max(1, cols)))
        var sb = [Float](repeating: 0, count: block * cols), rb = [Float](repeating: 0, count: block * cols)
        var cd = [Double](), cs = [Double](), cr = [Double]()
        if axis == .columns { cd = .init(repeating: 0, count: cols); cs = cd; cr = cd }
        for start in stride(from: 0, to: rows, by: block) {
            let range = start..<min(rows, start + block), n = range.count * cols
            try sb.withUnsafeMutableBufferPointer { try readSuspect(name, rows: range, into: UnsafeMutableBufferPointer(rebasing: $0[0..<n])) }
            try rb.withUnsafeMutableBufferPointer { try readReference(name, rows: range, into: UnsafeMutableBufferPointer(rebasing: $0[0..<n])) }
            sb.withUnsafeBufferPointer { s in
                rb.withUnsafeBufferPointer { r in
                    for k in 0..<range.count {
                        let x = UnsafeBufferPointer(rebasing: s[(k * cols)..<((k + 1) * cols)])
                        let y = UnsafeBufferPointer(rebasing: r[(k * cols)..<((k + 1) * cols)])
                        if axis == .rows {
                            let g = (start + k) / groupSize
                            out.dot[g] += BLAS.dot(x, y); out.suspectSquares[g] += BLAS.dot(x, x); out.referenceSquares[g] += BLAS.dot(y, y)
                        } else {
                            cd.withUnsafeMutableBufferPointer { d in cs.withUnsafeMutableBufferPointer { ss in cr.withUnsafeMutableBufferPointer { rr in
                                for j in 0..<cols {
                                    let a = Double(x[j]), b = Double(y[j])
                                    d[j] += a * b; ss[j] += a * a; rr[j] += b * b
                                }
                            } } }
                        }
                    }
                }
            }
        }
        if axis == .columns {
            for j in 0..<cols {
                let g = j / groupSize
                out.dot[g] += cd[j]; out.suspectSquares[g] += cs[j]; out.referenceSquares[g] += cr[j]
            }
        }
        if overrides[name] == nil { suspect.releaseTensor(named: name) }
        reference.releaseTensor(named: name)
        return out
    }
}

/// A fixed sparse random sketch (count sketch): input coordinate t goes to output `bucket[t]` with sign `sign[t]`.
/// Inner products of sketched vectors estimate those of the originals (unbiased, variance ≈ that of a dense Gaussian
/// sketch of the same width), at O(1) per input value instead of a matrix product. The same for every run; no key.
struct CountSketch {
    let bucket: [Int]
    let sign: [Float]
    let outputs: Int

    init(inputs: Int, outputs: Int) {
        var rng = SplitMix64(seed: 0xA11C_5EED ^ UInt64(inputs))
        var bucket = [Int](), sign = [Float]()
        bucket.reserveCapacity(inputs); sign.reserveCapacity(inputs)
        for _ in 0..<inputs {
            let z = rng.next()
            bucket.append(Int((z >> 1) % UInt64(outputs)))
            sign.append(z & 1 == 0 ? 1 : -1)
        }
        self.bucket = bucket; self.sign = sign; self.outputs = outputs
    }

    /// Sketches every row of `m` (rows × inputs) → rows × outputs.
    func sketchingRows(of m: Matrix) -> Matrix {
        precondition(m.cols == bucket.count)
        let k = outputs, n = m.cols
        var out = Matrix(rows: m.rows, cols: k)
        out.storage.withUnsafeMutableBufferPointer { o in
            m.storage.withUnsafeBufferPointer { s in
                bucket.withUnsafeBufferPointer { b in
                    sign.withUnsafeBufferPointer { g in
                        for i in 0..<m.rows {
                            let src = i * n, dst = i * k
                            for t in 0..<n { o[dst + b[t]] += g[t] * s[src + t] }
                        }
                    }
                }
            }
        }
        return out
    }

    /// Sketches every column of `m` (inputs × columns) → columns × outputs (a row per column).
    func sketchingColumns(of m: Matrix) -> Matrix {
        precondition(m.rows == bucket.count)
        let k = outputs, n = m.cols
        var acc = [Float](repeating: 0, count: k * n)
        acc.withUnsafeMutableBufferPointer { a in
            m.storage.withUnsafeBufferPointer { s in
                for r in 0..<m.rows {
                    let dst = bucket[r] * n, src = r * n, g = sign[r]
                    for j in 0..<n { a[dst + j] += g * s[src + j] }
                }
            }
        }
        return Matrix(rows: k, cols: n, storage: acc).transposed
    }
}

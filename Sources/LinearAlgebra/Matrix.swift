/// A dense row-major matrix of `Float`.
public struct Matrix: Sendable, Equatable {
    public let rows: Int
    public let cols: Int
    /// Elements in row-major order: element (i, j) is at `i * cols + j`.
    public var storage: [Float]

    public init(rows: Int, cols: Int, storage: [Float]) {
        precondition(rows >= 0 && cols >= 0 && storage.count == rows * cols, "storage size does not match \(rows)×\(cols)")
        self.rows = rows; self.cols = cols; self.storage = storage
    }

    public init(rows: Int, cols: Int, repeating value: Float = 0) {
        self.init(rows: rows, cols: cols, storage: [Float](repeating: value, count: rows * cols))
    }

    public init(rows: Int, cols: Int, generator: (Int, Int) -> Float) {
        var s = [Float](); s.reserveCapacity(rows * cols)
        for i in 0..<rows { for j in 0..<cols { s.append(generator(i, j)) } }
        self.init(rows: rows, cols: cols, storage: s)
    }

    public subscript(i: Int, j: Int) -> Float {
        get { storage[i * cols + j] }
        set { storage[i * cols + j] = newValue }
    }

    public var count: Int { rows * cols }

    public var transposed: Matrix {
        var t = Matrix(rows: cols, cols: rows)
        for i in 0..<rows { for j in 0..<cols { t.storage[j * rows + i] = storage[i * cols + j] } }
        return t
    }

    /// Frobenius norm, accumulated in double precision (sqrt of `dsdot`; OpenBLAS's scaled `snrm2` is several
    /// times slower and its overflow protection is not needed for weights).
    public var frobeniusNorm: Float { Float(BLAS.dot(storage, storage).squareRoot()) }

    public static func identity(_ n: Int) -> Matrix {
        Matrix(rows: n, cols: n) { i, j in i == j ? 1 : 0 }
    }
}

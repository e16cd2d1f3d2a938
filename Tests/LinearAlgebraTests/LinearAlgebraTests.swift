import Foundation
import Testing
import LinearAlgebra

private func randomMatrix(_ m: Int, _ n: Int, seed: UInt64) -> Matrix {
    var rng = SplitMix64(seed: seed)
    return Matrix(rows: m, cols: n, storage: (0..<(m * n)).map { _ in rng.nextGaussian() })
}

private func naiveMatmul(_ a: Matrix, _ b: Matrix) -> Matrix {
    Matrix(rows: a.rows, cols: b.cols) { i, j in
        var s: Double = 0
        for k in 0..<a.cols { s += Double(a[i, k]) * Double(b[k, j]) }
        return Float(s)
    }
}

private func relativeError(_ x: [Float], _ y: [Float]) -> Double {
    var num = 0.0, den = 0.0
    for (a, b) in zip(x, y) { num += Double(a - b) * Double(a - b); den += Double(b) * Double(b) }
    return (num / max(den, 1e-300)).squareRoot()
}

@Suite("LinearAlgebra wrappers against naive loops")
struct LinearAlgebraTests {
    @Test("gemm with every transpose combination", arguments: [(BLAS.Transpose.none, BLAS.Transpose.none), (.transposed, .none), (.none, .transposed), (.transposed, .transposed)])
    func gemm(_ ta: BLAS.Transpose, _ tb: BLAS.Transpose) {
        let a = randomMatrix(7, 5, seed: 1), b = randomMatrix(5, 3, seed: 2)
        let aIn = ta == .none ? a : a.transposed
        let bIn = tb == .none ? b : b.transposed
        var c = randomMatrix(7, 3, seed: 3)
        let c0 = c
        BLAS.gemm(aIn, bIn, transA: ta, transB: tb, alpha: 2, beta: 0.5, into: &c)
        let expected = naiveMatmul(a, b)
        let want = zip(expected.storage, c0.storage).map { 2 * $0 + 0.5 * $1 }
        #expect(relativeError(c.storage, want) < 1e-5)
    }

    @Test("gemv, dot, nrm2, axpy, scal")
    func level1and2() {
        let a = randomMatrix(6, 4, seed: 4)
        let x = randomMatrix(4, 1, seed: 5).storage
        var y = [Float](repeating: 1, count: 6)
        BLAS.gemv(a, x, alpha: 1, beta: 1, into: &y)
        let want = naiveMatmul(a, Matrix(rows: 4, cols: 1, storage: x)).storage.map { $0 + 1 }
        #expect(relativeError(y, want) < 1e-5)
        var yt = [Float](repeating: 0, count: 4)
        BLAS.gemv(a, y, trans: .transposed, into: &yt)
        #expect(relativeError(yt, naiveMatmul(a.transposed, Matrix(rows: 6, cols: 1, storage: y)).storage) < 1e-5)

        let u = randomMatrix(1000, 1, seed: 6).storage, v = randomMatrix(1000, 1, seed: 7).storage
        let d = zip(u, v).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        #expect(abs(BLAS.dot(u, v) - d) < 1e-6 * max(1, abs(d)))
        let n = (u.reduce(0.0) { $0 + Double($1) * Double($1) }).squareRoot()
        #expect(abs(Double(BLAS.nrm2(u)) - n) < 1e-5 * n)
        var w = v
        BLAS.axpy(-3, u, &w)
        #expect(relativeError(w, zip(u, v).map { $1 - 3 * $0 }) < 1e-6)
        BLAS.scal(0.5, &w)
        #expect(relativeError(w, zip(u, v).map { 0.5 * ($1 - 3 * $0) }) < 1e-6)
    }

    @Test("thin QR gives orthonormal columns spanning the input", arguments: [(50, 8), (300, 32), (16, 16)])
    func qr(_ m: Int, _ n: Int) throws {
        let a = randomMatrix(m, n, seed: UInt64(m * 31 + n))
        let q = try LAPACK.orthonormalBasis(a)
        #expect(q.rows == m && q.cols == n)
        let qtq = BLAS.matmul(q, q, transA: .transposed)
        #expect(relativeError(qtq.storage, Matrix.identity(n).storage) < 1e-5)
        // span: A = Q (Qᵀ A)
        let proj = BLAS.matmul(q, BLAS.matmul(q, a, transA: .transposed))
        #expect(relativeError(proj.storage, a.storage) < 1e-5)
    }

    @Test("Gram–Schmidt basis: orthonormal, QᵀG upper triangular with a positive diagonal", arguments: [(50, 8), (300, 32), (16, 16)])
    func gramSchmidt(_ m: Int, _ n: Int) throws {
        let a = randomMatrix(m, n, seed: UInt64(m * 7 + n))
        var columnMajor = a.transposed.storage
        let q = try LAPACK.gramSchmidtBasis(columnMajor: &columnMajor, rows: m, cols: n)
        #expect(relativeError(BLAS.matmul(q, q, transA: .transposed).storage, Matrix.identity(n).storage) < 1e-5)
        let r = BLAS.matmul(q, a, transA: .transposed)
        let scale = r.storage.map(abs).max() ?? 1
        for i in 0..<n {
            #expect(r[i, i] > 0)
            for j in 0..<i { #expect(abs(r[i, j]) < 1e-5 * scale) }
        }
        // Same span and, up to column signs, the same basis as the row-major QR.
        let plain = try LAPACK.orthonormalBasis(a)
        for j in 0..<n {
            let dot = (0..<m).reduce(Float(0)) { $0 + q[$1, j] * plain[$1, j] }
            #expect(abs(abs(dot) - 1) < 1e-4)
        }
    }

    @Test("Cholesky QR gives the Householder Gram–Schmidt basis on tall matrices and declines ill-conditioned ones")
    func choleskyGramSchmidt() throws {
        for (m, n) in [(128, 32), (2048, 32), (5000, 16)] {
            let g = randomMatrix(m, n, seed: UInt64(m + n))
            var columnMajor = g.transposed.storage
            let householder = try LAPACK.gramSchmidtBasis(columnMajor: &columnMajor, rows: m, cols: n)
            let q = try #require(LAPACK.choleskyGramSchmidtBasis(g))
            let worst = zip(q.storage, householder.storage).map { abs($0 - $1) }.max() ?? 1
            #expect(worst < 1e-5, "\(m)×\(n): \(worst)")
            #expect(relativeError(BLAS.matmul(q, q, transA: .transposed).storage, Matrix.identity(n).storage) < 1e-5)
        }
        // Two nearly parallel columns: cond ≈ 1e6, so Cholesky QR (error ~ cond² ε) must decline.
        var g = randomMatrix(200, 8, seed: 5)
        for i in 0..<200 { g[i, 1] = g[i, 0] + 1e-6 * g[i, 1] }
        #expect(LAPACK.choleskyGramSchmidtBasis(g) == nil)
    }

    @Test("SVD reconstructs the matrix with descending singular values")
    func svd() throws {
        let a = randomMatrix(40, 25, seed: 9)
        let (u, s, vt) = try LAPACK.svd(a)
        #expect(u.rows == 40 && u.cols == 25 && vt.rows == 25 && vt.cols == 25)
        #expect(zip(s, s.dropFirst()).allSatisfy { $0 >= $1 })
        var us = u
        for i in 0..<us.rows { for j in 0..<us.cols { us[i, j] *= s[j] } }
        #expect(relativeError(BLAS.matmul(us, vt).storage, a.storage) < 1e-5)
        let values = try LAPACK.singularValues(a)
        #expect(relativeError(values, s) < 1e-5)
        // Known answer: diag(3, 2, 1) padded.
        let d = Matrix(rows: 4, cols: 3) { i, j in i == j ? Float(3 - i) : 0 }
        #expect(relativeError(try LAPACK.singularValues(d), [3, 2, 1]) < 1e-6)
    }

    @Test("randomized SVD recovers the top singular values of a low-rank-plus-noise matrix")
    func randomizedSVD() throws {
        let m = 200, n = 120, r = 6
        let left = randomMatrix(m, r, seed: 11), right = randomMatrix(r, n, seed: 12)
        var a = BLAS.matmul(left, right)
        let noise = randomMatrix(m, n, seed: 13)
        BLAS.axpy(0.01, noise.storage, &a.storage)
        let exact = try LAPACK.singularValues(a)
        let (u, s, vt) = try LAPACK.randomizedSVD(a, rank: r)
        #expect(relativeError(s, Array(exact.prefix(r))) < 1e-3)
        #expect(u.cols == r && vt.rows == r)
        var us = u
        for i in 0..<m { for j in 0..<r { us[i, j] *= s[j] } }
        #expect(relativeError(BLAS.matmul(us, vt).storage, a.storage) < 0.02)
    }

    @Test("BLAS info reports the library actually mapped into the process")
    func info() throws {
        // Independent evidence of which library is loaded: the process's own memory map.
        // Read to the end: /proc files report size 0, and a single read may return only the first pages.
        let handle = try #require(FileHandle(forReadingAtPath: "/proc/self/maps"))
        let maps = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
        try handle.close()
        let openBLASMapped = maps.split(separator: "\n").contains { $0.contains("libopenblas") }
        let info = BLASInfo.current
        #expect((info.openBLASConfig != nil) == openBLASMapped, "maps OpenBLAS: \(openBLASMapped); info: \(info)")
        guard let config = info.openBLASConfig else {
            #expect(info.threadCount == nil)
            #expect(info.description.hasPrefix("reference BLAS"))
            return
        }
        #expect(config.hasPrefix("OpenBLAS "))
        #expect(info.description.hasPrefix(config.trimmingCharacters(in: .whitespaces)))
        // Other tests set OpenBLAS's (process-wide) thread count concurrently, so only its range is checked here.
        let threads = try #require(info.threadCount)
        #expect(threads >= 1 && threads <= 1024)
        #expect(info.description.hasSuffix(" thread(s)"))
    }
}

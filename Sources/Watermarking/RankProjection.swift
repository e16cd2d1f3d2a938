import CKernels
import CTensorIOKernels
import LinearAlgebra
import TensorIO

/// Z = X·B for a carrier B with 32 columns (the default rank): the detector's and embedder's inner product,
/// on CKernels' rank-32 kernel (no packing; bf16 rows read in place). Other ranks go through BLAS.
enum RankProjection {
    /// The carrier width the kernel handles.
    static let columns = 32
    /// The CPU's vector code path, chosen once.
    static let level = weightmark_vector_level()

    /// B (n×32) packed for `weightmark_pattern32`: Bᵀ in contiguous 32×32 panels.
    static func packForPattern(_ b: Matrix) -> [Float] {
        precondition(b.cols == columns)
        let panels = (b.rows + columns - 1) / columns
        return [Float](unsafeUninitializedCapacity: panels * columns * columns) { out, initialized in
            b.storage.withUnsafeBufferPointer { weightmark_pattern32_pack($0.baseAddress, b.rows, out.baseAddress) }
            initialized = panels * columns * columns
        }
    }

    /// z (rows×b) = x (rows×cols, row-major f32) · b (cols×b).
    static func project(_ x: UnsafeBufferPointer<Float>, rows: Int, cols: Int, b: Matrix, into z: UnsafeMutablePointer<Float>,
                        codePath: Int32 = level) {
        precondition(x.count >= rows * cols && b.rows == cols)
        b.storage.withUnsafeBufferPointer { bs in
            if b.cols == columns {
                weightmark_project32_f32(codePath, x.baseAddress, rows, cols, cols, bs.baseAddress, z)
            } else {
                BLAS.gemm(m: rows, n: b.cols, k: cols, a: x.baseAddress!, lda: cols, b: bs.baseAddress!, ldb: b.cols, c: z, ldc: b.cols)
            }
        }
    }

    /// The same from stored little-endian rows (aligned to their element size, as `withStoredRows` gives them);
    /// false (nothing written) unless they are bf16 or f32 and b has 32 columns, in which case the caller
    /// decodes and uses `project(_:rows:cols:b:into:)`.
    static func project(stored raw: UnsafeRawBufferPointer, dtype: DType, rows: Int, cols: Int, b: Matrix,
                        into z: UnsafeMutablePointer<Float>, codePath: Int32 = level) -> Bool {
        guard b.cols == columns, b.rows == cols, let base = raw.baseAddress else { return false }
        return b.storage.withUnsafeBufferPointer { bs in
            switch dtype {
            case .bf16:
                precondition(raw.count == rows * cols * 2)
                weightmark_project32_bf16(codePath, base.assumingMemoryBound(to: UInt16.self), rows, cols, cols, bs.baseAddress, z)
                return true
            case .f32:
                precondition(raw.count == rows * cols * 4)
                weightmark_project32_f32(codePath, base.assumingMemoryBound(to: Float.self), rows, cols, cols, bs.baseAddress, z)
                return true
            default:
                return false
            }
        }
    }
}

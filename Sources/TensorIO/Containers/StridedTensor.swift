/// A tensor as a view into a flat storage: element type, shape, strides and offset in elements (PyTorch's
/// model; NumPy's C and Fortran orders are special cases). Validated once, so every read stays inside the storage.
public struct StridedTensor: Sendable, Equatable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// Element strides, one per dimension.
    public var strides: [Int]
    /// Offset of element [0, 0, …] in elements from the start of the storage.
    public var storageOffset: Int
    public var elementCount: Int

    var elementSize: Int { dtype.bitCount / 8 }

    /// Checks a view against a storage of `storageElements` elements.
    ///
    /// Every integer came from a file: dimensions, strides and the offset must be non-negative, the element count
    /// and the furthest element reached (`offset + Σ (size_i − 1)·stride_i`) must not overflow, and that element
    /// must lie inside the storage.
    /// - Throws: a readable reason naming the tensor.
    public static func validated(name: String, dtype: DType, shape: [Int], strides: [Int], storageOffset: Int,
                                 storageElements: Int) throws(StridedTensorError) -> StridedTensor {
        guard dtype.bitCount % 8 == 0 else { throw .init(name, "sub-byte element type \(dtype.rawValue) is not supported") }
        guard shape.count == strides.count else { throw .init(name, "shape has \(shape.count) dimensions but strides \(strides.count)") }
        guard shape.count <= 8 else { throw .init(name, "\(shape.count) dimensions (at most 8 are read)") }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw .init(name, "negative dimension in shape \(shape)") }
        guard strides.allSatisfy({ $0 >= 0 }) else { throw .init(name, "negative stride in \(strides)") }
        guard storageOffset >= 0 else { throw .init(name, "negative storage offset \(storageOffset)") }
        var count = 1
        for d in shape {
            let (c, o) = count.multipliedReportingOverflow(by: d)
            guard !o else { throw .init(name, "element count of shape \(shape) overflows") }
            count = c
        }
        let (_, bytesOverflow) = count.multipliedReportingOverflow(by: dtype.bitCount / 8)
        guard !bytesOverflow else { throw .init(name, "byte size of shape \(shape) overflows") }
        if count > 0 {
            var last = storageOffset
            for (d, s) in zip(shape, strides) {
                let (span, o1) = (d - 1).multipliedReportingOverflow(by: s)
                let (sum, o2) = last.addingReportingOverflow(span)
                guard !o1, !o2 else { throw .init(name, "shape \(shape) with strides \(strides) and offset \(storageOffset) overflows") }
                last = sum
            }
            guard last < storageElements else {
                throw .init(name, "shape \(shape), strides \(strides) and offset \(storageOffset) reach element \(last), but the storage holds \(storageElements)")
            }
            // A view can only show more elements than its storage holds by repeating them (a zero or overlapping
            // stride, as `expand` makes). Such a view is read as what it is (broadcast) while its floats fit the
            // memory budget (a quarter of what the process may use); beyond it (2^40 floats from a 260 KB file) it is
            // refused before anything is allocated.
            if count > storageElements {
                let (floatBytes, o) = count.multipliedReportingOverflow(by: 4)
                guard !o, floatBytes <= ZipArchive.inflationBudget else {
                    throw .init(name, "shape \(shape) with strides \(strides) shows \(count) elements from a storage of \(storageElements) (a zero or overlapping stride repeats them), more than the \(ZipArchive.inflationBudget) bytes this process reads into memory; save the tensor with .contiguous() (or .clone()) first")
                }
            }
        }
        return StridedTensor(name: name, dtype: dtype, shape: shape, strides: strides, storageOffset: storageOffset, elementCount: count)
    }

    /// Whether the elements lie in row-major order with no gaps (dimensions of size 1 may have any stride).
    public var isRowMajorContiguous: Bool {
        var expected = 1
        for (d, s) in zip(shape, strides).reversed() where d != 1 {
            if s != expected { return false }
            expected *= d
        }
        return true
    }

    /// The bytes of rows `rows` of a row-major contiguous 2-D tensor, in place in `storage`; nil when not contiguous.
    public func contiguousRows(_ rows: Range<Int>, in storage: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        guard shape.count == 2, isRowMajorContiguous else { return nil }
        let cols = shape[1], w = elementSize
        let start = (storageOffset + rows.lowerBound * cols) * w
        return UnsafeRawBufferPointer(rebasing: storage[start..<(start + rows.count * cols * w)])
    }

    /// Decodes rows `rows` of a 2-D float tensor into `out` (`rows.count × columns`), following the strides.
    public func decodeRows(_ rows: Range<Int>, from storage: UnsafeRawBufferPointer, into out: UnsafeMutableBufferPointer<Float>) {
        precondition(shape.count == 2 && dtype.isSupportedFloat && rows.lowerBound >= 0 && rows.upperBound <= shape[0])
        let cols = shape[1]
        precondition(out.count == rows.count * cols)
        if let slice = contiguousRows(rows, in: storage) {
            FloatConversion.decode(slice, dtype: dtype, into: out)
            return
        }
        let w = elementSize
        var scratch = [UInt8](repeating: 0, count: cols * w)
        scratch.withUnsafeMutableBytes { row in
            for (i, r) in rows.enumerated() {
                let base = storageOffset + r * strides[0]
                for c in 0..<cols {
                    let from = (base + c * strides[1]) * w
                    row.baseAddress!.advanced(by: c * w).copyMemory(from: storage.baseAddress!.advanced(by: from), byteCount: w)
                }
                FloatConversion.decode(UnsafeRawBufferPointer(row), dtype: dtype,
                                       into: UnsafeMutableBufferPointer(rebasing: out[(i * cols)..<((i + 1) * cols)]))
            }
        }
    }

    /// The elements in row-major order as little-endian bytes (a copy), for any rank.
    public func rowMajorBytes(from storage: UnsafeRawBufferPointer) -> [UInt8] {
        let w = elementSize
        guard elementCount > 0 else { return [] }
        if isRowMajorContiguous {
            let start = storageOffset * w
            return Array(UnsafeRawBufferPointer(rebasing: storage[start..<(start + elementCount * w)]))
        }
        return [UInt8](unsafeUninitializedCapacity: elementCount * w) { out, n in
            var index = [Int](repeating: 0, count: shape.count)
            var element = storageOffset
            for k in 0..<elementCount {
                (out.baseAddress! + k * w).initialize(from: storage.baseAddress!.advanced(by: element * w).assumingMemoryBound(to: UInt8.self), count: w)
                // Odometer increment over the dimensions, last fastest.
                var d = shape.count - 1
                while d >= 0 {
                    index[d] += 1
                    element += strides[d]
                    if index[d] < shape[d] { break }
                    element -= strides[d] * shape[d]
                    index[d] = 0
                    d -= 1
                }
            }
            n = elementCount * w
        }
    }

    /// Decodes the whole float tensor in row-major order (straight from the storage when contiguous, with no byte copy).
    public func decodeFloats(from storage: UnsafeRawBufferPointer) -> [Float] {
        if isRowMajorContiguous {
            let start = storageOffset * elementSize
            return FloatConversion.decode(UnsafeRawBufferPointer(rebasing: storage[start..<(start + elementCount * elementSize)]), dtype: dtype)
        }
        let bytes = rowMajorBytes(from: storage)
        return bytes.withUnsafeBytes { FloatConversion.decode($0, dtype: dtype) }
    }
}

/// Why a tensor view does not fit its storage.
public struct StridedTensorError: Error, Equatable, Sendable, CustomStringConvertible {
    public var tensor: String
    public var reason: String
    init(_ tensor: String, _ reason: String) { self.tensor = tensor; self.reason = reason }
    public var description: String { "tensor \"\(tensor)\": \(reason)" }
}

import Foundation

/// A tensor as a detector sees it: Hugging Face name, row-major shape, and whether it decodes to floats.
public struct SourceTensor: Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    /// How it is stored ("F32", "BF16", "Q4_K", …).
    public var storage: String
    /// Whether `decodeFloats` works for it.
    public var isFloating: Bool
    public init(name: String, shape: [Int], storage: String, isFloating: Bool) {
        self.name = name; self.shape = shape; self.storage = storage; self.isFloating = isFloating
    }
}

/// Anything weights can be read from by name: safetensors models and GGUF files (seen with Hugging Face names).
public protocol TensorSource: AnyObject, Sendable {
    var path: String { get }
    var sourceTensors: [SourceTensor] { get }
    func sourceTensor(named name: String) -> SourceTensor?
    /// Values in row-major order under the Hugging Face layout.
    func decodeFloats(named name: String) throws -> [Float]
    /// Lets the tensor's mapped pages leave the resident set.
    func releaseTensor(named name: String)
}

extension SafetensorsModel: TensorSource {
    public var sourceTensors: [SourceTensor] {
        tensors.map { SourceTensor(name: $0.name, shape: $0.shape, storage: $0.dtype.rawValue, isFloating: $0.dtype.isSupportedFloat) }
    }
    public func sourceTensor(named name: String) -> SourceTensor? {
        tensor(named: name).map { SourceTensor(name: $0.name, shape: $0.shape, storage: $0.dtype.rawValue, isFloating: $0.dtype.isSupportedFloat) }
    }
    public func decodeFloats(named name: String) throws -> [Float] {
        guard let t = tensor(named: name) else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        return try floats(of: t)
    }
    public func releaseTensor(named name: String) { if let t = tensor(named: name) { release(t) } }
}

/// A source that can hand out each tensor's stored elements as they are (row-major, little-endian, in their own
/// element type), so it can be rewritten as safetensors without re-encoding (`attack`, `bench`).
public protocol StoredTensorSource: TensorSource {
    /// The element type a tensor is stored in, nil when it has no safetensors equivalent.
    func storedDType(named name: String) -> DType?
    /// The tensor's elements in row-major order (a copy).
    func rowMajorBytes(named name: String) throws -> [UInt8]
}

/// A source that can decode any range of rows of a 2-D tensor straight from its storage, so consumers can
/// stream a tensor through a small buffer instead of materializing it.
public protocol RowBlockDecodable: TensorSource {
    /// Decodes rows `rows` of tensor `name` (row-major) into `out` (`rows.count × columns` elements).
    func decodeRows(named name: String, rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws

    /// Calls `body` with the stored little-endian bytes of rows `rows` of tensor `name` and their dtype, when the
    /// tensor is stored as plain floats in memory (safetensors) aligned to their element size, so a consumer can
    /// read them in place as that type; returns nil (without calling `body`) for storage that must be decoded
    /// first (GGUF quantized blocks, permuted rows, floats at an unaligned file offset).
    func withStoredRows<R>(named name: String, rows: Range<Int>,
                           _ body: (UnsafeRawBufferPointer, DType) throws -> R) throws -> R?
}

extension RowBlockDecodable {
    public func withStoredRows<R>(named name: String, rows: Range<Int>,
                                  _ body: (UnsafeRawBufferPointer, DType) throws -> R) throws -> R? { nil }
}

extension SafetensorsModel: RowBlockDecodable {
    public func decodeRows(named name: String, rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws {
        guard let t = tensor(named: name) else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        guard t.dtype.isSupportedFloat, t.shape.count == 2 else { throw TensorIOError.unsupportedDType(tensor: name, dtype: t.dtype) }
        let cols = t.shape[1], width = t.dtype.bitCount / 8
        precondition(rows.lowerBound >= 0 && rows.upperBound <= t.shape[0] && out.count == rows.count * cols)
        withBytes(of: t) { all in
            let slice = UnsafeRawBufferPointer(rebasing: all[(rows.lowerBound * cols * width)..<(rows.upperBound * cols * width)])
            FloatConversion.decode(slice, dtype: t.dtype, into: out)
        }
    }

    public func withStoredRows<R>(named name: String, rows: Range<Int>,
                                  _ body: (UnsafeRawBufferPointer, DType) throws -> R) throws -> R? {
        guard let t = tensor(named: name) else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        guard t.dtype.isSupportedFloat, t.shape.count == 2 else { return nil }
        let cols = t.shape[1], width = t.dtype.bitCount / 8
        precondition(rows.lowerBound >= 0 && rows.upperBound <= t.shape[0])
        return try withBytes(of: t) { all -> R? in
            let stored = UnsafeRawBufferPointer(rebasing: all[(rows.lowerBound * cols * width)..<(rows.upperBound * cols * width)])
            guard Int(bitPattern: stored.baseAddress) % width == 0 else { return nil }
            return try body(stored, t.dtype)
        }
    }
}

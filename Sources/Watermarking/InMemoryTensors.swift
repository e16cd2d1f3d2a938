import TensorIO

/// Matrices held in memory as a tensor source, so attacked or synthesized weights go through the same detection
/// code as files (the benchmark's sweep, tests).
/// Sendable: immutable after init (every stored property is a `let`), so concurrent reads are safe.
public final class InMemoryTensors: RowBlockDecodable, @unchecked Sendable {
    public let path: String
    private let values: [String: (shape: [Int], values: [Float])]
    private let order: [String]

    /// - Parameter tensors: name, shape (row-major) and values of each tensor, in the order to list them.
    public init(path: String, tensors: [(name: String, shape: [Int], values: [Float])]) {
        self.path = path
        var v: [String: (shape: [Int], values: [Float])] = [:]
        for t in tensors {
            precondition(t.values.count == t.shape.reduce(1, *), "values of \(t.name) do not fill its shape")
            v[t.name] = (t.shape, t.values)
        }
        values = v
        order = tensors.map(\.name)
    }

    public var sourceTensors: [SourceTensor] { order.compactMap(sourceTensor(named:)) }
    public func sourceTensor(named name: String) -> SourceTensor? {
        values[name].map { SourceTensor(name: name, shape: $0.shape, storage: "F32", isFloating: true) }
    }
    public func decodeFloats(named name: String) throws -> [Float] {
        guard let v = values[name] else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        return v.values
    }
    public func releaseTensor(named name: String) {}
    public func decodeRows(named name: String, rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws {
        guard let v = values[name], v.shape.count == 2 else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        let n = v.shape[1]
        v.values.withUnsafeBufferPointer { src in
            for (k, i) in ((rows.lowerBound * n)..<(rows.upperBound * n)).enumerated() { out[k] = src[i] }
        }
    }
    public func withStoredRows<R>(named name: String, rows: Range<Int>, _ body: (UnsafeRawBufferPointer, DType) throws -> R) throws -> R? {
        guard let v = values[name], v.shape.count == 2 else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        let n = v.shape[1]
        return try v.values.withUnsafeBytes { raw in
            try body(UnsafeRawBufferPointer(rebasing: raw[(rows.lowerBound * n * 4)..<(rows.upperBound * n * 4)]), .f32)
        }
    }
}

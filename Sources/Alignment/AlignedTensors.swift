import TensorIO

/// A suspect seen through an alignment: the tensors the alignment rewrote come from memory (row-major floats, in the
/// reference's shape), every other tensor straight from the suspect, read in place when the suspect allows it.
public final class AlignedTensors: RowBlockDecodable, @unchecked Sendable {
    // Immutable after init: `base` is only read, `overrides` is never mutated.
    public let base: any TensorSource
    public let overrides: [String: (shape: [Int], values: [Float])]

    public init(base: any TensorSource, overrides: [String: (shape: [Int], values: [Float])]) {
        self.base = base
        self.overrides = overrides
    }

    public var path: String { base.path }

    public var sourceTensors: [SourceTensor] { base.sourceTensors.map { override($0) } }

    public func sourceTensor(named name: String) -> SourceTensor? { base.sourceTensor(named: name).map(override) }

    private func override(_ t: SourceTensor) -> SourceTensor {
        guard let o = overrides[t.name] else { return t }
        return SourceTensor(name: t.name, shape: o.shape, storage: "F32", isFloating: true)
    }

    public func decodeFloats(named name: String) throws -> [Float] {
        if let o = overrides[name] { return o.values }
        return try base.decodeFloats(named: name)
    }

    public func releaseTensor(named name: String) { if overrides[name] == nil { base.releaseTensor(named: name) } }

    public func decodeRows(named name: String, rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws {
        if let o = overrides[name] {
            precondition(o.shape.count == 2 && rows.upperBound <= o.shape[0] && out.count == rows.count * o.shape[1])
            let n = o.shape[1]
            o.values.withUnsafeBufferPointer { src in
                _ = out.initialize(from: src[(rows.lowerBound * n)..<(rows.upperBound * n)])
            }
            return
        }
        if let rowSource = base as? any RowBlockDecodable {
            try rowSource.decodeRows(named: name, rows: rows, into: out)
            return
        }
        guard let t = base.sourceTensor(named: name), t.shape.count == 2 else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        let all = try base.decodeFloats(named: name)
        let n = t.shape[1]
        all.withUnsafeBufferPointer { src in _ = out.initialize(from: src[(rows.lowerBound * n)..<(rows.upperBound * n)]) }
    }

    public func withStoredRows<R>(named name: String, rows: Range<Int>,
                                  _ body: (UnsafeRawBufferPointer, DType) throws -> R) throws -> R? {
        if let o = overrides[name] {
            let n = o.shape[1]
            return try o.values.withUnsafeBytes { raw in
                try body(UnsafeRawBufferPointer(rebasing: raw[(rows.lowerBound * n * 4)..<(rows.upperBound * n * 4)]), .f32)
            }
        }
        if let rowSource = base as? any RowBlockDecodable {
            return try rowSource.withStoredRows(named: name, rows: rows, body)
        }
        return nil
    }
}

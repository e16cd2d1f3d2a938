/// Serves row blocks of a source that cannot decode row ranges itself (GGUF) from one fully decoded tensor, so
/// every detection and marking path reads through `RowBlockDecodable`.
/// Sendable: never shared: `current` is mutated without a lock, so each task makes its own instance
/// (`rowBlocks(of:)`) and uses it on its own thread only.
public final class DecodedRows: RowBlockDecodable, @unchecked Sendable {
    public let base: any TensorSource
    private var current: (name: String, values: [Float], cols: Int)?

    public init(_ base: any TensorSource) { self.base = base }

    /// `source` itself when it decodes row ranges, else a new `DecodedRows` over it (one per task).
    public static func rowBlocks(of source: any TensorSource) -> any RowBlockDecodable {
        (source as? any RowBlockDecodable) ?? DecodedRows(source)
    }

    public var path: String { base.path }
    public var sourceTensors: [SourceTensor] { base.sourceTensors }
    public func sourceTensor(named name: String) -> SourceTensor? { base.sourceTensor(named: name) }
    public func decodeFloats(named name: String) throws -> [Float] { try base.decodeFloats(named: name) }
    public func releaseTensor(named name: String) {
        base.releaseTensor(named: name)
        if current?.name == name { current = nil }
    }
    public func decodeRows(named name: String, rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws {
        if current?.name != name {
            guard let t = base.sourceTensor(named: name), t.shape.count == 2 else { throw TensorIOError.tensorNotFound(name: name, path: path) }
            current = (name, try base.decodeFloats(named: name), t.shape[1])
        }
        let c = current!
        c.values.withUnsafeBufferPointer { src in
            let from = rows.lowerBound * c.cols
            for k in 0..<(rows.count * c.cols) { out[k] = src[from + k] }
        }
    }
}

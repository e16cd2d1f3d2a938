import TensorIO

/// A suspect seen through an alignment: the tensors the alignment rewrote come from memory (row-major floats, in the
/// reference's shape) or are gathered on demand from the suspect's rows and columns (permutations, rescalings and
/// merges, see `TensorGather`); every other tensor comes straight from the suspect, read in place when it allows it.
/// Sendable: immutable after init: `base` (itself Sendable) is only read, `overrides` and `gathers` are never mutated.
public final class AlignedTensors: RowBlockDecodable, @unchecked Sendable {
    public let base: any TensorSource
    /// Rewritten tensors held as floats.
    public let overrides: [String: (shape: [Int], values: [Float])]
    /// Rewritten tensors gathered from the suspect when read.
    public let gathers: [String: TensorGather]

    public init(base: any TensorSource, overrides: [String: (shape: [Int], values: [Float])], gathers: [String: TensorGather] = [:]) {
        precondition(Set(overrides.keys).isDisjoint(with: gathers.keys), "a tensor is either held or gathered")
        self.base = base
        self.overrides = overrides
        self.gathers = gathers
    }

    public var path: String { base.path }

    /// Names of the tensors the alignment rewrote.
    public var rewrittenNames: Set<String> { Set(overrides.keys).union(gathers.keys) }

    public var sourceTensors: [SourceTensor] { base.sourceTensors.map { override($0) } }

    public func sourceTensor(named name: String) -> SourceTensor? { base.sourceTensor(named: name).map(override) }

    private func override(_ t: SourceTensor) -> SourceTensor {
        if let o = overrides[t.name] { return SourceTensor(name: t.name, shape: o.shape, storage: "F32", isFloating: true) }
        if let g = gathers[t.name] { return SourceTensor(name: t.name, shape: g.shape, storage: "F32", isFloating: true) }
        return t
    }

    public func decodeFloats(named name: String) throws -> [Float] {
        if let o = overrides[name] { return o.values }
        if let g = gathers[name] {
            return try [Float](unsafeUninitializedCapacity: g.shape[0] * g.shape[1]) { buffer, count in
                try decodeRows(named: name, rows: 0..<g.shape[0], into: buffer)
                count = g.shape[0] * g.shape[1]
            }
        }
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
        if let g = gathers[name] {
            if base is any RowBlockDecodable {
                try g.decodeRows(rows, into: out) { range, buffer in try decodeBaseRows(named: name, rows: range, into: buffer) }
            } else {
                // Decoded once for the whole call rather than once per gathered row.
                let all = try base.decodeFloats(named: name), n = g.sourceColumns
                try all.withUnsafeBufferPointer { src in
                    try g.decodeRows(rows, into: out) { range, buffer in
                        _ = buffer.initialize(from: src[(range.lowerBound * n)..<(range.upperBound * n)])
                    }
                }
            }
            return
        }
        try decodeBaseRows(named: name, rows: rows, into: out)
    }

    private func decodeBaseRows(named name: String, rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws {
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
        if gathers[name] != nil { return nil }
        if let rowSource = base as? any RowBlockDecodable {
            return try rowSource.withStoredRows(named: name, rows: rows, body)
        }
        return nil
    }
}

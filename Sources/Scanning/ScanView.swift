import Foundation
import TensorIO

/// Thrown by a view's reads once the model's time limit has passed, so detection stops at the next row block.
struct ScanTimeout: Error {}

/// A read-only view of a model that exposes only some of its tensors (the sample), stops reading at a deadline, and
/// counts the stored bytes of the tensors it hands out: what the detectors see during triage.
///
/// Detection code (`Detector.detect`) is unchanged: it sees a `TensorSource` whose tensor list is the sample.
/// Sendable: `touched` is read and written under `lock` (detection reads tensors on several threads); every other
/// stored property is a `let`.
class ScanView: TensorSource, @unchecked Sendable {
    let base: any TensorSource
    let exposed: [SourceTensor]
    private let byName: [String: SourceTensor]
    let deadline: DispatchTime
    private var touched = Set<String>()
    private let lock = NSLock()

    init(base: any TensorSource, exposing tensors: [SourceTensor], deadline: DispatchTime) {
        self.base = base
        exposed = tensors
        byName = Dictionary(tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.deadline = deadline
    }

    /// A view of `base`, as row-decodable as `base` is.
    static func make(_ base: any TensorSource, exposing tensors: [SourceTensor], deadline: DispatchTime) -> ScanView {
        if let rows = base as? any RowBlockDecodable { return ScanRowView(rows: rows, exposing: tensors, deadline: deadline) }
        return ScanView(base: base, exposing: tensors, deadline: deadline)
    }

    var path: String { base.path }
    var sourceTensors: [SourceTensor] { exposed }
    func sourceTensor(named name: String) -> SourceTensor? { byName[name] }

    func check(_ name: String) throws {
        if DispatchTime.now() > deadline { throw ScanTimeout() }
        guard byName[name] != nil else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        lock.withLock { _ = touched.insert(name) }
    }

    func decodeFloats(named name: String) throws -> [Float] {
        try check(name)
        return try base.decodeFloats(named: name)
    }
    func releaseTensor(named name: String) { base.releaseTensor(named: name) }

    /// Names of the tensors read so far.
    var tensorsRead: Set<String> { lock.withLock { touched } }
}

/// The view of a source that decodes row ranges itself, keeping detection's streaming path.
/// Sendable: it adds only `rows`, a `let` (itself Sendable); the inherited `touched` stays under `lock`.
final class ScanRowView: ScanView, RowBlockDecodable, @unchecked Sendable {
    let rows: any RowBlockDecodable
    init(rows: any RowBlockDecodable, exposing tensors: [SourceTensor], deadline: DispatchTime) {
        self.rows = rows
        super.init(base: rows, exposing: tensors, deadline: deadline)
    }
    func decodeRows(named name: String, rows range: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws {
        try check(name)
        try rows.decodeRows(named: name, rows: range, into: out)
    }
    func withStoredRows<R>(named name: String, rows range: Range<Int>, _ body: (UnsafeRawBufferPointer, DType) throws -> R) throws -> R? {
        try check(name)
        return try rows.withStoredRows(named: name, rows: range, body)
    }
}

extension TensorSource {
    /// Stored bytes of tensor `name` (exact for safetensors and GGUF; elements × width for other float storage).
    func storedBytes(of name: String) -> Int {
        if let s = self as? SafetensorsModel, let t = s.tensor(named: name) { return t.descriptor.byteCount }
        if let g = self as? GGUFModel, let i = g.ggufInfo(named: name) { return i.byteCount }
        guard let t = sourceTensor(named: name) else { return 0 }
        let elements = t.shape.reduce(1, *)
        if let d = DType(rawValue: t.storage) { return elements * max(1, d.bitCount / 8) }
        return elements * 4
    }
}

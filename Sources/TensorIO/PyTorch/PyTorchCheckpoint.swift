/// A PyTorch zip checkpoint (`torch.save` since 1.6: `pytorch_model.bin`, `.pt`, `.pth`) read without executing
/// its pickle: the state dict's tensors, read in place from the memory-mapped archive.
///
/// Opening reads only the central directory and `data.pkl`; tensor bytes are touched when decoded.
/// Sendable: immutable after init: the read-only mapping and the parsed layout are only read.
public final class PyTorchCheckpoint: RowBlockDecodable, StoredTensorSource, @unchecked Sendable {
    public let archive: ZipArchive
    public let layout: PyTorchArchiveLayout
    private let byName: [String: Int]

    public var path: String { archive.path }

    /// Opens the checkpoint at `path`.
    /// - Throws: `TensorIOError` naming the file: a broken ZIP, an unsafe or unsupported pickle (naming the global
    ///   it would import), or a tensor that does not fit its storage.
    public convenience init(path: String) throws(TensorIOError) {
        try self.init(archive: try ZipArchive(path: path))
    }

    /// Reads the checkpoint in an archive already opened.
    public init(archive: ZipArchive) throws(TensorIOError) {
        self.archive = archive
        let path = archive.path
        let directory = archive.directory
        do {
            layout = try archive.mapping.withBytes { (b) throws(PyTorchArchiveLayout.Failure) in
                try PyTorchArchiveLayout.parse(directory: directory, file: b)
            }
        } catch {
            switch error {
            case let .zip(e): throw .invalidZip(path: path, reason: e)
            case let .pickle(entry, e): throw .invalidPickle(path: path, entry: entry, reason: e)
            case let .layout(reason): throw .invalidPyTorch(path: path, reason: reason)
            }
        }
        var index: [String: Int] = [:]
        for (i, t) in layout.tensors.enumerated() { index[t.view.name] = i }
        byName = index
    }

    public var tensors: [PyTorchArchiveLayout.Tensor] { layout.tensors }

    public func tensor(named name: String) -> PyTorchArchiveLayout.Tensor? { byName[name].map { layout.tensors[$0] } }

    private func source(_ t: PyTorchArchiveLayout.Tensor) -> SourceTensor {
        SourceTensor(name: t.view.name, shape: t.view.shape, storage: t.view.dtype.rawValue, isFloating: t.view.dtype.isSupportedFloat)
    }

    public var sourceTensors: [SourceTensor] { layout.tensors.map(source) }
    public func sourceTensor(named name: String) -> SourceTensor? { tensor(named: name).map(source) }

    private func lookup(_ name: String) throws -> PyTorchArchiveLayout.Tensor {
        guard let t = tensor(named: name) else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        return t
    }

    public func decodeFloats(named name: String) throws -> [Float] {
        let t = try lookup(name)
        guard t.view.dtype.isSupportedFloat else { throw TensorIOError.unsupportedDType(tensor: name, dtype: t.view.dtype) }
        return archive.withStoredBytes(of: t.storage) { t.view.decodeFloats(from: $0) }
    }

    public func releaseTensor(named name: String) {
        if let t = tensor(named: name) { archive.mapping.release(t.storage.dataRange) }
    }

    public func decodeRows(named name: String, rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws {
        let t = try lookup(name)
        guard t.view.dtype.isSupportedFloat, t.view.shape.count == 2 else { throw TensorIOError.unsupportedDType(tensor: name, dtype: t.view.dtype) }
        archive.withStoredBytes(of: t.storage) { t.view.decodeRows(rows, from: $0, into: out) }
    }

    public func withStoredRows<R>(named name: String, rows: Range<Int>,
                                  _ body: (UnsafeRawBufferPointer, DType) throws -> R) throws -> R? {
        let t = try lookup(name)
        guard t.view.dtype.isSupportedFloat, t.view.shape.count == 2 else { return nil }
        return try archive.withStoredBytes(of: t.storage) { storage -> R? in
            guard let slice = t.view.contiguousRows(rows, in: storage),
                  Int(bitPattern: slice.baseAddress) % t.view.elementSize == 0 else { return nil }
            return try body(slice, t.view.dtype)
        }
    }

    public func storedDType(named name: String) -> DType? { tensor(named: name)?.view.dtype }

    public func rowMajorBytes(named name: String) throws -> [UInt8] {
        let t = try lookup(name)
        return archive.withStoredBytes(of: t.storage) { t.view.rowMajorBytes(from: $0) }
    }
}

import Foundation

/// NumPy arrays as a tensor source: a `.npz` archive (`numpy.savez`, stored entries read in place;
/// `numpy.savez_compressed`, deflated entries inflated on demand) or a single `.npy` file.
///
/// Member names lose their `.npy` suffix; a single `.npy` file's tensor is named after the file without `.npy`.
/// Deflated members are inflated once when first read and kept until `releaseTensor`, so memory stays bounded by
/// the tensors being worked on at once.
/// Sendable: immutable after init but for `inflated`, which is read and written only under `lock`.
public final class NumPyArrays: RowBlockDecodable, StoredTensorSource, @unchecked Sendable {
    public enum Container: Sendable { case npz, npy }

    /// One array: its view and where its bytes are.
    public struct Array: Sendable {
        public var view: StridedTensor
        /// The zip member (npz) or nil (npy: the whole file after the header).
        public var entry: ZipEntry?
        /// Offset of the array data: in the file for stored data, in the inflated member otherwise.
        public var dataOffset: Int
        public var dataBytes: Int
    }

    public let path: String
    public let container: Container
    public let mapping: MappedFile
    public let arrays: [Array]
    private let byName: [String: Int]
    private let lock = NSLock()
    // Inflated members of deflated arrays, guarded by `lock`.
    private var inflated: [String: [UInt8]] = [:]

    public init(path: String) throws(TensorIOError) {
        self.path = path
        mapping = try MappedFile(path: path)
        let isNPY = mapping.withBytes { NPYHeader.looksLikeNPY($0) }
        var list: [Array] = []
        if isNPY {
            container = .npy
            let name = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
            list = [try mapping.withBytes { (b) throws(TensorIOError) in
                do {
                    let h = try NPYHeader.parse(b)
                    return try Self.array(name: name, header: h, entry: nil, dataOffset: h.dataOffset, dataBytes: b.count - h.dataOffset)
                } catch let e as NPYHeaderError {
                    throw .invalidNumPy(path: path, reason: e.reason)
                } catch let e as StridedTensorError {
                    throw .invalidNumPy(path: path, reason: e.description)
                } catch {
                    throw .invalidNumPy(path: path, reason: "\(error)")
                }
            }]
        } else {
            container = .npz
            let directory: ZipDirectory
            do { directory = try mapping.withBytes { (b) throws(ZipFormatError) in try ZipDirectory.parse(file: b) } } catch {
                throw .invalidZip(path: path, reason: error)
            }
            for entry in directory.entries {
                guard entry.name.hasSuffix(".npy") else {
                    throw .invalidNumPy(path: path, reason: "member \"\(entry.name)\" is not a .npy array")
                }
                let name = String(entry.name.dropLast(4))
                do {
                    let header: NPYHeader = try mapping.withBytes { (b) throws(TensorIOError) in
                        let data = UnsafeRawBufferPointer(rebasing: b[entry.dataRange])
                        switch entry.method {
                        case .stored:
                            do throws(NPYHeaderError) { return try NPYHeader.parse(data) } catch { throw .invalidNumPy(path: path, reason: "\(entry.name): \(error.reason)") }
                        case .deflated:
                            let prefix = try Self.inflatedPrefix(data, entry: entry, path: path)
                            do { return try prefix.withUnsafeBytes { try NPYHeader.parse($0) } } catch let e as NPYHeaderError {
                                throw .invalidNumPy(path: path, reason: "\(entry.name): \(e.reason)")
                            } catch {
                                throw .invalidNumPy(path: path, reason: "\(entry.name): \(error)")
                            }
                        }
                    }
                    guard header.dataOffset <= entry.uncompressedSize else {
                        throw TensorIOError.invalidNumPy(path: path, reason: "\(entry.name): header runs past the member")
                    }
                    let offset = entry.method == .stored ? entry.dataOffset + header.dataOffset : header.dataOffset
                    list.append(try Self.array(name: name, header: header, entry: entry, dataOffset: offset,
                                               dataBytes: entry.uncompressedSize - header.dataOffset))
                } catch let e as StridedTensorError {
                    throw .invalidNumPy(path: path, reason: "\(entry.name): \(e.reason)")
                } catch let e as TensorIOError {
                    throw e
                } catch {
                    throw .invalidNumPy(path: path, reason: "\(error)")
                }
            }
        }
        var index: [String: Int] = [:]
        for (i, a) in list.enumerated() { index[a.view.name] = i }
        arrays = list
        byName = index
    }

    /// Up to the first 1 MB + 16 bytes of a deflated member (enough for any accepted header).
    private static func inflatedPrefix(_ data: UnsafeRawBufferPointer, entry: ZipEntry, path: String) throws(TensorIOError) -> [UInt8] {
        do {
            return try ZipArchive.inflatePrefix(data, count: min(entry.uncompressedSize, NPYHeader.maximumHeaderLength + 16), name: entry.name)
        } catch {
            throw .invalidZip(path: path, reason: error)
        }
    }

    private static func array(name: String, header h: NPYHeader, entry: ZipEntry?, dataOffset: Int, dataBytes: Int) throws -> Array {
        var count = 1
        for d in h.shape {
            let (c, o) = count.multipliedReportingOverflow(by: d)
            guard !o else { throw StridedTensorError(name, "element count of shape \(h.shape) overflows") }
            count = c
        }
        let (bytes, o) = count.multipliedReportingOverflow(by: h.dtype.bitCount / 8)
        guard !o, bytes == dataBytes else {
            throw StridedTensorError(name, "shape \(h.shape) of \(h.dtype.rawValue) needs \(o ? "more than Int.max" : String(bytes)) bytes but \(dataBytes) follow the header")
        }
        let view = try StridedTensor.validated(name: name, dtype: h.dtype, shape: h.shape, strides: h.strides,
                                               storageOffset: 0, storageElements: count)
        return Array(view: view, entry: entry, dataOffset: dataOffset, dataBytes: dataBytes)
    }

    /// Calls `body` with the array's data bytes: in place for stored data, from the (cached) inflated member otherwise.
    private func withData<R>(_ a: Array, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        if let entry = a.entry, entry.method == .deflated {
            lock.lock()
            let cached = inflated[a.view.name]
            lock.unlock()
            let member: [UInt8]
            if let cached { member = cached } else {
                member = try mapping.withBytes { (b) throws(TensorIOError) in
                    do throws(ZipFormatError) { return try ZipArchive.contents(of: entry, in: UnsafeRawBufferPointer(rebasing: b[entry.dataRange])) } catch {
                        throw .invalidZip(path: path, reason: error)
                    }
                }
                lock.lock(); inflated[a.view.name] = member; lock.unlock()
            }
            return try member.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[a.dataOffset..<(a.dataOffset + a.dataBytes)])) }
        }
        return try mapping.withBytes { try body(UnsafeRawBufferPointer(rebasing: $0[a.dataOffset..<(a.dataOffset + a.dataBytes)])) }
    }

    private func lookup(_ name: String) throws -> Array {
        guard let i = byName[name] else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        return arrays[i]
    }

    private func source(_ a: Array) -> SourceTensor {
        SourceTensor(name: a.view.name, shape: a.view.shape, storage: a.view.dtype.rawValue, isFloating: a.view.dtype.isSupportedFloat)
    }

    public var sourceTensors: [SourceTensor] { arrays.map(source) }
    public func sourceTensor(named name: String) -> SourceTensor? { byName[name].map { source(arrays[$0]) } }

    public func decodeFloats(named name: String) throws -> [Float] {
        let a = try lookup(name)
        guard a.view.dtype.isSupportedFloat else { throw TensorIOError.unsupportedDType(tensor: name, dtype: a.view.dtype) }
        return try withData(a) { a.view.decodeFloats(from: $0) }
    }

    public func releaseTensor(named name: String) {
        guard let a = try? lookup(name) else { return }
        if a.entry?.method == .deflated {
            lock.lock(); inflated[name] = nil; lock.unlock()
        } else {
            mapping.release(a.dataOffset..<(a.dataOffset + a.dataBytes))
        }
    }

    public func decodeRows(named name: String, rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws {
        let a = try lookup(name)
        guard a.view.dtype.isSupportedFloat, a.view.shape.count == 2 else { throw TensorIOError.unsupportedDType(tensor: name, dtype: a.view.dtype) }
        try withData(a) { a.view.decodeRows(rows, from: $0, into: out) }
    }

    public func withStoredRows<R>(named name: String, rows: Range<Int>,
                                  _ body: (UnsafeRawBufferPointer, DType) throws -> R) throws -> R? {
        let a = try lookup(name)
        guard a.view.dtype.isSupportedFloat, a.view.shape.count == 2 else { return nil }
        return try withData(a) { data -> R? in
            guard let slice = a.view.contiguousRows(rows, in: data),
                  Int(bitPattern: slice.baseAddress) % a.view.elementSize == 0 else { return nil }
            return try body(slice, a.view.dtype)
        }
    }

    public func storedDType(named name: String) -> DType? { byName[name].map { arrays[$0].view.dtype } }

    public func rowMajorBytes(named name: String) throws -> [UInt8] {
        let a = try lookup(name)
        return try withData(a) { a.view.rowMajorBytes(from: $0) }
    }
}

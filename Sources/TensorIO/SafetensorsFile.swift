/// A memory-mapped, validated safetensors file.
///
/// Opening parses and validates only the header; tensor bytes are read on demand through the mapping.
/// Sendable: immutable after init: the validated header and a read-only mapping, only read.
public final class SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let header: SafetensorsHeader
    public let mapping: MappedFile
    private let indexByName: [String: Int]

    /// Maps `path` and validates its header.
    /// - Throws: `TensorIOError.invalidSafetensors` naming the file, the rule broken and the byte offset.
    public convenience init(path: String) throws(TensorIOError) {
        try self.init(mapping: MappedFile(path: path))
    }

    /// Validates the header of the file held by `mapping` (a mapped file, or bytes copied into memory).
    /// - Throws: `TensorIOError.invalidSafetensors` naming `mapping.path`, the rule broken and the byte offset.
    public init(mapping: MappedFile) throws(TensorIOError) {
        path = mapping.path
        self.mapping = mapping
        do {
            header = try mapping.withBytes { (b) throws(SafetensorsFormatError) in try SafetensorsHeader.parse(file: b) }
        } catch {
            throw .invalidSafetensors(path: path, reason: error)
        }
        var index: [String: Int] = [:]
        for (i, t) in header.tensors.enumerated() { index[t.name] = i }
        indexByName = index
    }

    public var tensors: [TensorDescriptor] { header.tensors }
    public var metadata: [(key: String, value: String)]? { header.metadata }

    public func descriptor(named name: String) -> TensorDescriptor? {
        indexByName[name].map { header.tensors[$0] }
    }

    /// Absolute byte range of a tensor's data in the file.
    public func fileRange(of t: TensorDescriptor) -> Range<Int> {
        (header.dataStart + t.dataOffsets.lowerBound)..<(header.dataStart + t.dataOffsets.upperBound)
    }

    /// Calls `body` with the raw bytes of `t`; the pointer is valid only inside the closure.
    public func withBytes<R, E: Error>(of t: TensorDescriptor, _ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        let r = fileRange(of: t)
        return try mapping.withBytes { (all) throws(E) -> R in try body(UnsafeRawBufferPointer(rebasing: all[r])) }
    }

    /// Decodes a float tensor to `Float` (row-major, as stored).
    public func floats(of t: TensorDescriptor) throws(TensorIOError) -> [Float] {
        guard t.dtype.isSupportedFloat else { throw .unsupportedDType(tensor: t.name, dtype: t.dtype) }
        return withBytes(of: t) { FloatConversion.decode($0, dtype: t.dtype) }
    }

    /// Drops the tensor's pages from this process's resident set (they stay in the page cache).
    public func release(_ t: TensorDescriptor) { mapping.release(fileRange(of: t)) }
}

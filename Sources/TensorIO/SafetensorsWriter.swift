/// A tensor to be written: its header entry and a producer of exactly `byteCount` bytes.
public struct OutputTensor {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// Hands the tensor's bytes, in one or more pieces, to the sink it is given.
    public var produce: (_ sink: (UnsafeRawBufferPointer) throws -> Void) throws -> Void
    /// Alternatively, all the bytes at once in a page-aligned buffer the writer may write from directly.
    public var placed: (() throws -> PlacedBytes)?

    public init(name: String, dtype: DType, shape: [Int],
                produce: @escaping (_ sink: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) {
        self.name = name; self.dtype = dtype; self.shape = shape; self.produce = produce
    }

    /// A tensor whose bytes arrive in a `PlacedBytes` buffer (written without a copy when the layout allows).
    public init(name: String, dtype: DType, shape: [Int], placed: @escaping () throws -> PlacedBytes) {
        self.init(name: name, dtype: dtype, shape: shape) { sink in try sink(try placed().bytes) }
        self.placed = placed
    }

    /// A tensor whose bytes are already in memory.
    public init(name: String, dtype: DType, shape: [Int], bytes: [UInt8]) {
        self.init(name: name, dtype: dtype, shape: shape) { sink in try bytes.withUnsafeBytes { try sink($0) } }
    }

    public var byteCount: Int { shape.reduce(1, *) * dtype.bitCount / 8 }
}

/// Writes safetensors files with the reference writer's layout.
///
/// Tensors are ordered by dtype (descending, in the reference crate's order) then by name; the header is
/// compact JSON with `__metadata__` first, padded with spaces to a multiple of 8 bytes; the file is
/// written to a temporary path, fsynced and renamed into place.
public enum SafetensorsWriter {
    /// The reference writer's tensor order.
    public static func referenceOrder(_ a: (name: String, dtype: DType), _ b: (name: String, dtype: DType)) -> Bool {
        if a.dtype != b.dtype { return a.dtype > b.dtype }
        return a.name.utf8.lexicographicallyPrecedes(b.name.utf8)
    }

    /// The header bytes (length prefix included) for tensors already in reference order.
    public static func headerBytes(tensors: [(name: String, dtype: DType, shape: [Int])],
                                   metadata: [(key: String, value: String)]?) -> [UInt8] {
        var members: [JSONMember] = []
        if let metadata {
            members.append(JSONMember(key: "__metadata__",
                                      value: .object(metadata.map { JSONMember(key: $0.key, value: .string($0.value)) })))
        }
        var offset = 0
        for t in tensors {
            let size = t.shape.reduce(1, *) * t.dtype.bitCount / 8
            members.append(JSONMember(key: t.name, value: .object([
                JSONMember(key: "dtype", value: .string(t.dtype.rawValue)),
                JSONMember(key: "shape", value: .array(t.shape.map { .number(String($0)) })),
                JSONMember(key: "data_offsets", value: .array([.number(String(offset)), .number(String(offset + size))])),
            ])))
            offset += size
        }
        var json = Array(JSONValue.object(members).serialized().utf8)
        json.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - json.count % 8) % 8))
        var out: [UInt8] = []
        out.reserveCapacity(8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: json)
        return out
    }

    /// Writes `tensors` to `path`.
    /// - Parameters:
    ///   - overwrite: replace an existing file; otherwise an existing `path` is an error and is untouched.
    /// - Returns: the number of bytes written.
    /// - Throws: `TensorIOError.outputExists`, `.writeFailed`, `.invalidTensor` (a producer gave the wrong size).
    @discardableResult
    public static func write(_ tensors: [OutputTensor], metadata: [(key: String, value: String)]?,
                             to path: String, overwrite: Bool = false,
                             observer: ((UnsafeRawBufferPointer) -> Void)? = nil) throws -> Int {
        var seen = Set<String>()
        for t in tensors where !seen.insert(t.name).inserted {
            throw TensorIOError.invalidTensor(name: t.name, reason: "duplicate tensor name")
        }
        let ordered = tensors.sorted { referenceOrder(($0.name, $0.dtype), ($1.name, $1.dtype)) }
        let writer = try AtomicFileWriter(destination: path, overwrite: overwrite, unbuffered: true)
        writer.observer = observer
        try writer.write(headerBytes(tensors: ordered.map { ($0.name, $0.dtype, $0.shape) }, metadata: metadata))
        for t in ordered {
            let before = writer.bytesWritten
            if let placed = t.placed {
                try writer.write(placed: try placed())
            } else {
                try t.produce { bytes in try writer.write(bytes) }
            }
            let produced = writer.bytesWritten - before
            if produced != t.byteCount {
                throw TensorIOError.invalidTensor(name: t.name, reason: "producer wrote \(produced) bytes, expected \(t.byteCount)")
            }
        }
        try writer.commit()
        return writer.bytesWritten
    }
}

import TensorIO
/// A tensor to write into a GGUF file: numpy-order shape, ggml type, and its encoded bytes.
public struct GGUFOutputTensor {
    public var name: String
    public var shape: [Int]
    public var type: GGMLType
    public var bytes: [UInt8]
    public init(name: String, shape: [Int], type: GGMLType, bytes: [UInt8]) {
        self.name = name; self.shape = shape; self.type = type; self.bytes = bytes
    }
}

/// Writes GGUF v3 files: header, metadata, tensor infos (ne = shape reversed), zero padding to the
/// alignment, then each tensor's data padded to the alignment. Atomic (temporary file, fsync, rename).
public enum GGUFWriter {
    public static func encode(_ value: GGUFValue, into out: inout [UInt8]) {
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        switch value {
        case let .uint8(v): put(v)
        case let .int8(v): put(v)
        case let .uint16(v): put(v)
        case let .int16(v): put(v)
        case let .uint32(v): put(v)
        case let .int32(v): put(v)
        case let .float32(v): put(v.bitPattern)
        case let .bool(v): put(UInt8(v ? 1 : 0))
        case let .string(s): put(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8)
        case let .array(elementType, values):
            put(elementType); put(UInt64(values.count))
            for v in values { encode(v, into: &out) }
        case let .uint64(v): put(v)
        case let .int64(v): put(v)
        case let .float64(v): put(v.bitPattern)
        }
    }

    public static func write(metadata: [(key: String, value: GGUFValue)], tensors: [GGUFOutputTensor],
                             to path: String, overwrite: Bool, alignment: Int = 32) throws {
        var head: [UInt8] = []
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { head.append(contentsOf: $0) } }
        head.append(contentsOf: Array("GGUF".utf8))
        put(UInt32(3))
        put(UInt64(tensors.count))
        put(UInt64(metadata.count))
        for (k, v) in metadata {
            put(UInt64(k.utf8.count)); head.append(contentsOf: k.utf8)
            put(v.typeID)
            encode(v, into: &head)
        }
        var offset = 0
        for t in tensors {
            precondition(t.name.utf8.count < 64, "GGUF tensor names must be shorter than 64 bytes")
            put(UInt64(t.name.utf8.count)); head.append(contentsOf: t.name.utf8)
            let ne = t.shape.reversed()
            put(UInt32(ne.count))
            for d in ne { put(UInt64(d)) }
            put(t.type.rawValue)
            put(UInt64(offset))
            offset += (t.bytes.count + alignment - 1) / alignment * alignment
        }
        head.append(contentsOf: repeatElement(0, count: (alignment - head.count % alignment) % alignment))
        let w = try AtomicFileWriter(destination: path, overwrite: overwrite, unbuffered: true)
        try w.write(head)
        for t in tensors {
            try w.write(t.bytes)
            let pad = (alignment - t.bytes.count % alignment) % alignment
            if pad > 0 { try w.write([UInt8](repeating: 0, count: pad)) }
        }
        try w.commit()
    }
}

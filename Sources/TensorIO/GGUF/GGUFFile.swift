/// A GGUF metadata value.
public indirect enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32), float32(Float)
    case bool(Bool), string(String), array(elementType: UInt32, values: [GGUFValue])
    case uint64(UInt64), int64(Int64), float64(Double)

    /// The value as an integer, if it is one.
    public var integer: Int? {
        switch self {
        case let .uint8(v): Int(v)
        case let .int8(v): Int(v)
        case let .uint16(v): Int(v)
        case let .int16(v): Int(v)
        case let .uint32(v): Int(v)
        case let .int32(v): Int(v)
        case let .uint64(v): Int(exactly: v)
        case let .int64(v): Int(v)
        default: nil
        }
    }

    public var string: String? { if case let .string(s) = self { s } else { nil } }

    /// A short rendering for `inspect` (arrays summarized).
    public var summary: String {
        switch self {
        case let .string(s): return "\"\(s.count > 60 ? s.prefix(57) + "…" : Substring(s))\""
        case let .array(_, values): return "[\(values.count) items]"
        case let .bool(b): return b ? "true" : "false"
        case let .float32(f): return "\(f)"
        case let .float64(f): return "\(f)"
        default: return integer.map(String.init) ?? "?"
        }
    }

    /// Wire type id.
    public var typeID: UInt32 {
        switch self {
        case .uint8: 0
        case .int8: 1
        case .uint16: 2
        case .int16: 3
        case .uint32: 4
        case .int32: 5
        case .float32: 6
        case .bool: 7
        case .string: 8
        case .array: 9
        case .uint64: 10
        case .int64: 11
        case .float64: 12
        }
    }
}

/// One tensor of a GGUF file.
public struct GGUFTensorInfo: Sendable, Equatable {
    public var name: String
    /// ggml's ne[], fastest-varying first.
    public var ne: [Int]
    public var type: GGMLType
    /// Offset relative to the data section.
    public var offset: Int
    public var byteCount: Int
    /// Row-major (numpy) shape: ne reversed.
    public var shape: [Int] { ne.reversed() }
    public var elementCount: Int { ne.reduce(1, *) }
}

/// A little-endian cursor over file bytes; every read is bounds-checked.
struct GGUFCursor {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    mutating func need(_ n: Int, _ what: String) throws(GGUFFormatError) {
        if n < 0 || offset > bytes.count - n { throw .truncated(offset: offset, needed: n - (bytes.count - offset), what: what) }
    }
    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: String) throws(GGUFFormatError) -> T {
        try need(MemoryLayout<T>.size, what)
        defer { offset += MemoryLayout<T>.size }
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
    }
    mutating func string(_ what: String) throws(GGUFFormatError) -> String {
        let start = offset
        let n = try read(UInt64.self, what)
        guard n <= UInt64(bytes.count - offset) else { throw .stringTooLong(offset: start, length: n) }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + Int(n))]), as: UTF8.self)
        offset += Int(n)
        return s
    }
}

/// A memory-mapped, validated GGUF file (versions 2 and 3).
/// Sendable: immutable after init: the validated header and a read-only mapping, only read.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    public let metadata: [(key: String, value: GGUFValue)]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    public let dataStart: Int
    public let mapping: MappedFile
    private let byName: [String: Int]

    public convenience init(path: String) throws {
        try self.init(mapping: MappedFile(path: path))
    }

    /// Parses and validates the GGUF file held by `mapping` (a mapped file, or bytes copied into memory).
    /// - Throws: `TensorIOError.invalidGGUF` naming `mapping.path` and the rule broken.
    public init(mapping: MappedFile) throws {
        path = mapping.path
        self.mapping = mapping
        do {
            let parsed = try mapping.withBytes { (b) throws(GGUFFormatError) in try GGUFFile.parse(b) }
            (version, metadata, tensors, alignment, dataStart) = parsed
        } catch let .unknownTensorType(tensor, type, _) {
            // Without its block layout the tensor's size, and so the rest of the data section, is unknown.
            throw TensorIOError.unknownGGMLType(tensor: tensor, id: type, path: path)
        } catch {
            throw TensorIOError.invalidGGUF(path: path, reason: error)
        }
        var index: [String: Int] = [:]
        for (i, t) in tensors.enumerated() { index[t.name] = i }
        byName = index
    }

    public func value(_ key: String) -> GGUFValue? { metadata.first { $0.key == key }?.value }
    public func tensor(named name: String) -> GGUFTensorInfo? { byName[name].map { tensors[$0] } }

    public func withBytes<R>(of t: GGUFTensorInfo, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try mapping.withBytes { all in try body(UnsafeRawBufferPointer(rebasing: all[(dataStart + t.offset)..<(dataStart + t.offset + t.byteCount)])) }
    }

    /// Dequantized values in row-major (numpy) order.
    public func floats(of t: GGUFTensorInfo) throws -> [Float] {
        guard GGMLBlockCodec.supportedForDecoding.contains(t.type) else {
            throw TensorIOError.unsupportedGGMLType(tensor: t.name, type: t.type.name, path: path)
        }
        return withBytes(of: t) { GGMLBlockCodec.dequantize($0, as: t.type, count: t.elementCount) }
    }

    public func release(_ t: GGUFTensorInfo) { mapping.release((dataStart + t.offset)..<(dataStart + t.offset + t.byteCount)) }

    static let maxArrayDepth = 8

    static func parseValue(_ c: inout GGUFCursor, type: UInt32, depth: Int) throws(GGUFFormatError) -> GGUFValue {
        let at = c.offset
        switch type {
        case 0: return .uint8(try c.read(UInt8.self, "a u8 value"))
        case 1: return .int8(try c.read(Int8.self, "an i8 value"))
        case 2: return .uint16(try c.read(UInt16.self, "a u16 value"))
        case 3: return .int16(try c.read(Int16.self, "an i16 value"))
        case 4: return .uint32(try c.read(UInt32.self, "a u32 value"))
        case 5: return .int32(try c.read(Int32.self, "an i32 value"))
        case 6: return .float32(Float(bitPattern: try c.read(UInt32.self, "an f32 value")))
        case 7: return .bool(try c.read(UInt8.self, "a bool value") != 0)
        case 8: return .string(try c.string("a string value"))
        case 9:
            guard depth < maxArrayDepth else { throw .arrayTooDeep(offset: at) }
            let elementTypeAt = c.offset
            let elementType = try c.read(UInt32.self, "an array's element type")
            guard let elementBytes = minimumEncodedSize(type: elementType) else {
                throw .unknownValueType(offset: elementTypeAt, type: elementType)
            }
            let countAt = c.offset
            let count = try c.read(UInt64.self, "an array's length")
            // A count whose smallest encoding would run past the end of the file cannot be honest.
            let (needed, overflow) = count.multipliedReportingOverflow(by: UInt64(elementBytes))
            guard !overflow, needed <= UInt64(c.bytes.count - c.offset) else {
                throw .countTooLarge(what: "array element", count: count, offset: countAt)
            }
            var values: [GGUFValue] = []
            values.reserveCapacity(Int(count))
            for _ in 0..<Int(count) { values.append(try parseValue(&c, type: elementType, depth: depth + 1)) }
            return .array(elementType: elementType, values: values)
        case 10: return .uint64(try c.read(UInt64.self, "a u64 value"))
        case 11: return .int64(try c.read(Int64.self, "an i64 value"))
        case 12: return .float64(Double(bitPattern: try c.read(UInt64.self, "an f64 value")))
        default: throw .unknownValueType(offset: at - 4, type: type)
        }
    }

    /// Fewest bytes a value of wire type `type` takes (a string: its length; an array: type and count), nil for
    /// an unknown type.
    static func minimumEncodedSize(type: UInt32) -> Int? {
        switch type {
        case 0, 1, 7: 1
        case 2, 3: 2
        case 4, 5, 6: 4
        case 8, 10, 11, 12: 8
        case 9: 12
        default: nil
        }
    }

    /// `x` rounded up to a multiple of `alignment` (a power of two), nil when that overflows.
    static func roundedUp(_ x: UInt64, toMultipleOf alignment: UInt64) -> UInt64? {
        let (sum, overflow) = x.addingReportingOverflow(alignment - 1)
        return overflow ? nil : sum & ~(alignment - 1)
    }

    static func parse(_ bytes: UnsafeRawBufferPointer) throws(GGUFFormatError)
        -> (UInt32, [(key: String, value: GGUFValue)], [GGUFTensorInfo], Int, Int) {
        var c = GGUFCursor(bytes: bytes)
        try c.need(4, "the magic")
        let magic = Array(UnsafeRawBufferPointer(rebasing: bytes[0..<4]))
        guard magic == Array("GGUF".utf8) else { throw .badMagic(found: magic) }
        c.offset = 4
        let version = try c.read(UInt32.self, "the version")
        guard version == 2 || version == 3 else { throw .unsupportedVersion(version) }
        let tensorCountAt = c.offset
        let tensorCount = try c.read(UInt64.self, "the tensor count")
        let kvCountAt = c.offset
        let kvCount = try c.read(UInt64.self, "the metadata count")
        // Each KV takes at least 12 bytes and each tensor info at least 24.
        guard kvCount <= UInt64(bytes.count / 12) else { throw .countTooLarge(what: "metadata", count: kvCount, offset: kvCountAt) }
        guard tensorCount <= UInt64(bytes.count / 24) else { throw .countTooLarge(what: "tensor", count: tensorCount, offset: tensorCountAt) }
        var metadata: [(key: String, value: GGUFValue)] = []
        var keys = Set<String>()
        for _ in 0..<Int(kvCount) {
            let at = c.offset
            let key = try c.string("a metadata key")
            guard keys.insert(key).inserted else { throw .duplicateKey(key, offset: at) }
            let type = try c.read(UInt32.self, "a metadata value type")
            metadata.append((key, try parseValue(&c, type: type, depth: 0)))
        }
        var alignment = 32
        if let a = metadata.first(where: { $0.key == "general.alignment" })?.value {
            guard let v = a.integer, v > 0, v & (v - 1) == 0 else {
                throw .invalidAlignment(UInt64(truncatingIfNeeded: a.integer ?? 0))
            }
            alignment = v
        }
        // Offsets and sizes stay UInt64 until the end of the data is known to lie inside the file: only then
        // do they become Ints (a file can claim offsets up to 2^64 - 1).
        var pending: [(name: String, ne: [Int], type: GGMLType, offset: UInt64, size: Int)] = []
        var names = Set<String>()
        var expected: UInt64 = 0
        let align = UInt64(alignment)
        for _ in 0..<Int(tensorCount) {
            let at = c.offset
            let name = try c.string("a tensor name")
            guard names.insert(name).inserted else { throw .duplicateTensor(name, offset: at) }
            guard name.utf8.count < 64 else { throw .nameTooLong(name, offset: at) }
            let dims = try c.read(UInt32.self, "a tensor's dimension count")
            guard dims <= 4 else { throw .tooManyDimensions(tensor: name, dimensions: dims, offset: at) }
            var ne: [Int] = []
            var elements = 1
            for _ in 0..<Int(dims) {
                let d = try c.read(UInt64.self, "a tensor dimension")
                guard let di = Int(exactly: d) else { throw .invalidDimension(tensor: name, offset: at) }
                let (p, o) = elements.multipliedReportingOverflow(by: di)
                if o { throw .sizeOverflow(tensor: name) }
                elements = p
                ne.append(di)
            }
            let rawType = try c.read(UInt32.self, "a tensor type")
            guard let type = GGMLType(rawValue: rawType) else { throw .unknownTensorType(tensor: name, type: rawType, offset: at) }
            let offset = try c.read(UInt64.self, "a tensor offset")
            let (qk, blockBytes) = type.blockLayout
            let ne0 = ne.first ?? 1
            guard ne0 % qk == 0 else { throw .rowNotMultipleOfBlock(tensor: name, ne0: ne0, block: qk, type: type.name) }
            let (size, o2) = (elements / qk).multipliedReportingOverflow(by: blockBytes)
            if o2 { throw .sizeOverflow(tensor: name) }
            guard offset % align == 0 else { throw .misalignedOffset(tensor: name, offset: offset, alignment: alignment) }
            guard offset == expected else { throw .unexpectedOffset(tensor: name, offset: offset, expected: expected) }
            let (end, o3) = offset.addingReportingOverflow(UInt64(size))
            guard !o3, let next = roundedUp(end, toMultipleOf: align) else { throw .sizeOverflow(tensor: name) }
            expected = next
            pending.append((name, ne, type, offset, size))
        }
        // With no tensors the data section is empty and may start past the end of the file.
        let dataStart = Int(clamping: roundedUp(UInt64(c.offset), toMultipleOf: align) ?? .max)
        var infos: [GGUFTensorInfo] = []
        infos.reserveCapacity(pending.count)
        for t in pending {
            let (start, o1) = UInt64(dataStart).addingReportingOverflow(t.offset)
            let (end, o2) = start.addingReportingOverflow(UInt64(t.size))
            guard !o1, !o2, end <= UInt64(bytes.count) else {
                throw .dataBeyondFile(tensor: t.name, end: o1 || o2 ? nil : end, fileSize: bytes.count)
            }
            infos.append(GGUFTensorInfo(name: t.name, ne: t.ne, type: t.type, offset: Int(t.offset), byteCount: t.size))
        }
        return (version, metadata, infos, alignment, dataStart)
    }
}

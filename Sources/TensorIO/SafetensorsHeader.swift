/// Where one tensor lives and what it holds.
public struct TensorDescriptor: Sendable, Equatable, Hashable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    /// Byte range relative to the start of the data buffer (after the header).
    public var dataOffsets: Range<Int>

    public init(name: String, dtype: DType, shape: [Int], dataOffsets: Range<Int>) {
        self.name = name; self.dtype = dtype; self.shape = shape; self.dataOffsets = dataOffsets
    }

    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { dataOffsets.count }
    /// Rows × columns for a 2-D tensor, nil otherwise.
    public var matrixShape: (rows: Int, cols: Int)? { shape.count == 2 ? (shape[0], shape[1]) : nil }
}

/// A parsed, validated safetensors header.
public struct SafetensorsHeader: Sendable, Equatable {
    /// `__metadata__` members in file order; nil when absent or `null`.
    public var metadata: [(key: String, value: String)]?
    /// Tensors in data order (ascending offsets).
    public var tensors: [TensorDescriptor]
    /// Length of the JSON header in bytes (the u64 at byte 0).
    public var headerLength: Int

    /// Absolute offset of the data buffer.
    public var dataStart: Int { 8 + headerLength }

    public static func == (a: SafetensorsHeader, b: SafetensorsHeader) -> Bool {
        a.tensors == b.tensors && a.headerLength == b.headerLength
            && a.metadata?.map(\.key) == b.metadata?.map(\.key) && a.metadata?.map(\.value) == b.metadata?.map(\.value)
    }

    /// Largest header the reference implementation accepts.
    public static let maximumHeaderLength: UInt64 = 100_000_000

    /// Parses and validates the header of a complete safetensors file.
    ///
    /// Applies every check of the reference Rust reader: size limits, UTF-8, strict JSON, integer
    /// literals, known dtypes, overflow-checked sizes, contiguous non-overlapping offsets, and a buffer
    /// that ends exactly at the end of the file.
    /// - Parameter file: the whole file's bytes.
    /// - Throws: `SafetensorsFormatError` naming the rule and the byte offset.
    public static func parse(file: UnsafeRawBufferPointer) throws(SafetensorsFormatError) -> SafetensorsHeader {
        guard file.count >= 8 else { throw .fileTooSmall(size: file.count) }
        let n = file.loadUnaligned(fromByteOffset: 0, as: UInt64.self).littleEndian
        guard n <= maximumHeaderLength else { throw .headerTooLarge(length: n) }
        let (end, overflow) = Int(n).addingReportingOverflow(8)
        guard !overflow, end <= file.count else { throw .headerBeyondFile(length: n, fileSize: file.count) }
        let headerBytes = UnsafeRawBufferPointer(rebasing: file[8..<end])
        let (metadata, entries) = try parseEntries(header: headerBytes)
        let tensors = try validated(entries, dataStart: end, bufferLength: file.count - end)
        return SafetensorsHeader(metadata: metadata, tensors: tensors, headerLength: Int(n))
    }

    /// A tensor entry as written, before its offsets are checked (`end` may precede `begin`).
    struct RawEntry {
        var name: String
        var dtype: DType
        var shape: [Int]
        var begin: Int
        var end: Int
    }

    static func parseEntries(header bytes: UnsafeRawBufferPointer)
        throws(SafetensorsFormatError) -> ([(key: String, value: String)]?, [RawEntry]) {
        if let bad = firstInvalidUTF8Index(bytes) { throw .invalidUTF8(offset: 8 + bad) }
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF { throw .byteOrderMark }
        let root: JSONValue
        do {
            root = try JSONParser.parse(bytes, baseOffset: 8)
        } catch {
            throw .invalidJSON(offset: error.offset, reason: error.reason)
        }
        guard case let .object(members) = root else { throw .headerNotObject }
        var seen = Set<String>()
        var metadata: [(key: String, value: String)]?
        var tensors: [RawEntry] = []
        tensors.reserveCapacity(members.count)
        for member in members {
            guard seen.insert(member.key).inserted else { throw .duplicateKey(member.key, offset: member.offset) }
            if member.key == "__metadata__" {
                metadata = try parseMetadata(member.value)
            } else {
                tensors.append(try parseTensor(name: member.key, member.value))
            }
        }
        return (metadata, tensors)
    }

    private static func parseMetadata(_ value: JSONValue) throws(SafetensorsFormatError) -> [(key: String, value: String)]? {
        switch value {
        case .null: return nil
        case let .object(members):
            var out: [(key: String, value: String)] = []
            var seen = Set<String>()
            for m in members {
                guard case let .string(s) = m.value else {
                    throw .invalidMetadata(reason: "value of \"\(m.key)\" is \(m.value.serialized()), not a string")
                }
                guard seen.insert(m.key).inserted else { throw .duplicateKey(m.key, offset: m.offset) }
                out.append((m.key, s))
            }
            return out
        default:
            throw .invalidMetadata(reason: "expected an object of strings or null, found \(value.serialized())")
        }
    }

    private static func parseTensor(name: String, _ value: JSONValue) throws(SafetensorsFormatError) -> RawEntry {
        guard case let .object(fields) = value else {
            throw .invalidTensorEntry(tensor: name, reason: "entry is not an object")
        }
        var dtypeText: String?
        var shapeValue: JSONValue?
        var offsetsValue: JSONValue?
        for f in fields {
            switch f.key {
            case "dtype":
                guard case let .string(s) = f.value else { throw .invalidTensorEntry(tensor: name, reason: "dtype is not a string") }
                dtypeText = s
            case "shape": shapeValue = f.value
            case "data_offsets": offsetsValue = f.value
            default: continue // the reference reader ignores unknown fields
            }
        }
        guard let dtypeText else { throw .invalidTensorEntry(tensor: name, reason: "missing dtype") }
        guard let dtype = DType(rawValue: dtypeText) else { throw .unknownDType(tensor: name, dtype: dtypeText) }
        guard case let .array(shapeItems)? = shapeValue else {
            throw .invalidTensorEntry(tensor: name, reason: "missing or non-array shape")
        }
        var shape: [Int] = []
        for item in shapeItems {
            guard let d = item.exactInteger else {
                throw .nonIntegerNumber(tensor: name, field: "shape", text: item.serialized())
            }
            shape.append(d)
        }
        guard case let .array(offsetItems)? = offsetsValue, offsetItems.count == 2 else {
            throw .invalidTensorEntry(tensor: name, reason: "data_offsets must be an array of two integers")
        }
        guard let begin = offsetItems[0].exactInteger, let end = offsetItems[1].exactInteger else {
            throw .nonIntegerNumber(tensor: name, field: "data_offsets", text: JSONValue.array(offsetItems).serialized())
        }
        return RawEntry(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
    }

    /// Applies the reference reader's buffer rules and returns the tensors in data order.
    static func validated(_ entries: [RawEntry], dataStart: Int, bufferLength: Int)
        throws(SafetensorsFormatError) -> [TensorDescriptor] {
        // Sorted by (begin, end) as the reference does, so aliasing and overlaps surface as offset errors.
        let sorted = entries.sorted { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var out: [TensorDescriptor] = []
        out.reserveCapacity(sorted.count)
        var start = 0
        for t in sorted {
            let begin = t.begin, end = t.end
            if begin != start || end < begin {
                throw .invalidOffsets(tensor: t.name, begin: begin, end: end, expectedBegin: start,
                                      offset: dataStart.addingReportingOverflow(begin).partialValue)
            }
            var elements = 1
            for d in t.shape {
                let (p, o) = elements.multipliedReportingOverflow(by: d)
                if o { throw .elementCountOverflow(tensor: t.name) }
                elements = p
            }
            let (bits, o) = elements.multipliedReportingOverflow(by: t.dtype.bitCount)
            if o { throw .elementCountOverflow(tensor: t.name) }
            if bits % 8 != 0 { throw .fractionalByteSize(tensor: t.name, bits: bits) }
            if bits / 8 != end - begin {
                throw .sizeMismatch(tensor: t.name, expected: bits / 8, actual: end - begin, offset: dataStart + begin)
            }
            out.append(TensorDescriptor(name: t.name, dtype: t.dtype, shape: t.shape, dataOffsets: begin..<end))
            start = end
        }
        if start != bufferLength {
            throw .bufferSizeMismatch(expected: start, actual: bufferLength, offset: dataStart + min(start, bufferLength))
        }
        return out
    }
}


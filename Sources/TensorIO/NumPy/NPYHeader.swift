/// The header of a NumPy `.npy` array (format versions 1–3): element type, memory order and shape.
///
/// Layout: `\x93NUMPY`, major and minor version bytes, the header length (u16 little-endian in version 1,
/// u32 in 2 and 3), then a Python dict literal such as `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
/// Only that literal's grammar is parsed (strings, booleans, tuples of integers); nothing is evaluated.
public struct NPYHeader: Sendable, Equatable {
    public var dtype: DType
    public var fortranOrder: Bool
    public var shape: [Int]
    /// Bytes before the array data (magic, lengths, dict, padding).
    public var dataOffset: Int

    public static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
    /// Largest header accepted (numpy itself writes well under 1 KB).
    public static let maximumHeaderLength = 1 << 20

    /// Whether `prefix` starts with the .npy magic.
    public static func looksLikeNPY(_ prefix: UnsafeRawBufferPointer) -> Bool {
        prefix.count >= 6 && prefix.prefix(6).elementsEqual(magic)
    }

    /// Parses the header at the start of `bytes` (which may hold more than the header).
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(NPYHeaderError) -> NPYHeader {
        var c = ByteCursor(bytes)
        guard let m = c.read(count: 6), m.elementsEqual(magic) else { throw .init("missing the \\x93NUMPY magic") }
        guard let major = c.read(UInt8.self), let minor = c.read(UInt8.self) else { throw .init("truncated before the version") }
        let length: Int
        switch major {
        case 1: guard let n = c.read(UInt16.self) else { throw .init("truncated header length") }; length = Int(n)
        case 2, 3: guard let n = c.read(UInt32.self) else { throw .init("truncated header length") }; length = Int(n)
        default: throw .init("format version \(major).\(minor) is not supported (1.0 to 3.0 are)")
        }
        guard length <= maximumHeaderLength else { throw .init("header length \(length) exceeds \(maximumHeaderLength) bytes") }
        guard let text = c.read(count: length) else { throw .init("the \(length)-byte header runs past the end of the data") }
        var p = LiteralParser(bytes: text)
        let dict = try p.parseDict()
        guard let descr = dict["descr"], case let .string(d) = descr else { throw .init("no 'descr' string (structured arrays are not read)") }
        guard let fortran = dict["fortran_order"], case let .bool(f) = fortran else { throw .init("no 'fortran_order' boolean") }
        guard let shapeValue = dict["shape"], case let .tuple(dims) = shapeValue else { throw .init("no 'shape' tuple") }
        guard let dtype = dtype(descr: d) else {
            throw .init("element type '\(d)' is not read (little-endian floats, integers and bool are; bfloat16 from ml_dtypes is saved as raw bytes)")
        }
        return NPYHeader(dtype: dtype, fortranOrder: f, shape: dims, dataOffset: c.offset)
    }

    static func dtype(descr: String) -> DType? {
        let table: [String: DType] = [
            "<f4": .f32, "<f2": .f16, "<f8": .f64, "<i8": .i64, "<i4": .i32, "<i2": .i16, "|i1": .i8, "<i1": .i8,
            "|u1": .u8, "<u1": .u8, "<u2": .u16, "<u4": .u32, "<u8": .u64, "|b1": .bool,
        ]
        return table[descr]
    }

    /// Element strides of the array in its file order.
    public var strides: [Int] {
        var s = [Int](repeating: 0, count: shape.count)
        var step = 1
        let order = fortranOrder ? Array(shape.indices) : shape.indices.reversed()
        for d in order { s[d] = step; step = step &* max(shape[d], 1) }
        return s
    }
}

/// Why a .npy header was rejected.
public struct NPYHeaderError: Error, Equatable, Sendable, CustomStringConvertible {
    public var reason: String
    init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// The Python-literal subset numpy writes in .npy headers.
private struct LiteralParser {
    enum Value { case string(String), bool(Bool), tuple([Int]) }
    let bytes: UnsafeRawBufferPointer
    var i = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    mutating func skipSpace() { while i < bytes.count, [0x20, 0x0A, 0x09, 0x0D].contains(bytes[i]) { i += 1 } }

    mutating func expect(_ ch: UInt8) throws(NPYHeaderError) {
        skipSpace()
        guard i < bytes.count, bytes[i] == ch else { throw .init("header dict: expected '\(Character(UnicodeScalar(ch)))' at header byte \(i)") }
        i += 1
    }

    mutating func peek() -> UInt8? { skipSpace(); return i < bytes.count ? bytes[i] : nil }

    mutating func parseDict() throws(NPYHeaderError) -> [String: Value] {
        try expect(UInt8(ascii: "{"))
        var out: [String: Value] = [:]
        while true {
            if peek() == UInt8(ascii: "}") { i += 1; break }
            let key = try parseString()
            try expect(UInt8(ascii: ":"))
            guard out.updateValue(try parseValue(), forKey: key) == nil else { throw .init("header dict: key '\(key)' appears twice") }
            if peek() == UInt8(ascii: ",") { i += 1; continue }
            try expect(UInt8(ascii: "}"))
            break
        }
        return out
    }

    mutating func parseString() throws(NPYHeaderError) -> String {
        guard let q = peek(), q == UInt8(ascii: "'") || q == UInt8(ascii: "\"") else { throw .init("header dict: expected a string at header byte \(i)") }
        i += 1
        let start = i
        while i < bytes.count, bytes[i] != q { i += 1 }
        guard i < bytes.count else { throw .init("header dict: unterminated string") }
        defer { i += 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
    }

    mutating func parseValue() throws(NPYHeaderError) -> Value {
        guard let c = peek() else { throw .init("header dict: truncated") }
        if c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") { return .string(try parseString()) }
        if c == UInt8(ascii: "(") {
            i += 1
            var dims: [Int] = []
            while true {
                if peek() == UInt8(ascii: ")") { i += 1; break }
                dims.append(try parseInt())
                guard dims.count <= 8 else { throw .init("header dict: more than 8 dimensions") }
                if peek() == UInt8(ascii: ",") { i += 1; continue }
                try expect(UInt8(ascii: ")"))
                break
            }
            return .tuple(dims)
        }
        for (word, value) in [("True", true), ("False", false)] where bytes.count - i >= word.utf8.count
            && UnsafeRawBufferPointer(rebasing: bytes[i..<(i + word.utf8.count)]).elementsEqual(word.utf8) {
            i += word.utf8.count
            return .bool(value)
        }
        throw .init("header dict: unexpected value at header byte \(i) (a list descr means a structured array, which is not read)")
    }

    mutating func parseInt() throws(NPYHeaderError) -> Int {
        skipSpace()
        var v = 0, digits = 0
        while i < bytes.count, bytes[i] >= 0x30, bytes[i] <= 0x39 {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(Int(bytes[i] - 0x30))
            guard !o1, !o2 else { throw .init("header dict: dimension overflows") }
            v = s; i += 1; digits += 1
        }
        if i < bytes.count, bytes[i] == UInt8(ascii: "L") { i += 1 }
        guard digits > 0 else { throw .init("header dict: expected a non-negative integer at header byte \(i)") }
        return v
    }
}

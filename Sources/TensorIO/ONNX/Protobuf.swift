/// A bounds-checked reader of protocol-buffer wire format over bytes in memory (ONNX's ModelProto).
///
/// Every length and offset read from the bytes is checked against what is left before it is used; field numbers and
/// wire types are returned as read, and unknown fields are skipped by their wire type.
struct ProtobufReader {
    enum WireType: UInt64 { case varint = 0, fixed64 = 1, lengthDelimited = 2, startGroup = 3, endGroup = 4, fixed32 = 5 }

    struct Failure: Error, CustomStringConvertible {
        var offset: Int
        var reason: String
        var description: String { "at byte \(offset): \(reason)" }
    }

    let bytes: UnsafeRawBufferPointer
    /// Absolute offset of `bytes` in the file (for messages and for ranges handed back).
    let base: Int
    private(set) var position = 0

    init(_ bytes: UnsafeRawBufferPointer, base: Int = 0) {
        self.bytes = bytes
        self.base = base
    }

    var atEnd: Bool { position >= bytes.count }

    mutating func varint() throws(Failure) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard position < bytes.count else { throw Failure(offset: base + position, reason: "truncated varint") }
            let b = bytes[position]
            position += 1
            if shift == 63 && b > 1 { throw Failure(offset: base + position - 1, reason: "varint longer than 64 bits") }
            result |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw Failure(offset: base + position, reason: "varint longer than 10 bytes") }
        }
    }

    /// The next field's number and wire type, nil at the end.
    mutating func field() throws(Failure) -> (number: Int, wire: WireType)? {
        guard !atEnd else { return nil }
        let start = position
        let key = try varint()
        guard let wire = WireType(rawValue: key & 7) else { throw Failure(offset: base + start, reason: "wire type \(key & 7) does not exist") }
        let number = key >> 3
        guard number > 0, number < (1 << 29) else { throw Failure(offset: base + start, reason: "field number \(number) out of range") }
        return (Int(number), wire)
    }

    /// The byte range (relative to `bytes`) of a length-delimited field's payload; the reader moves past it.
    mutating func lengthDelimited() throws(Failure) -> Range<Int> {
        let start = position
        let n = try varint()
        guard n <= UInt64(bytes.count - position) else {
            throw Failure(offset: base + start, reason: "length \(n) runs past the end of its message (\(bytes.count - position) bytes left)")
        }
        let r = position..<(position + Int(n))
        position += Int(n)
        return r
    }

    mutating func fixed32() throws(Failure) -> UInt32 {
        guard bytes.count - position >= 4 else { throw Failure(offset: base + position, reason: "truncated fixed32") }
        let v = bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self).littleEndian
        position += 4
        return v
    }

    mutating func fixed64() throws(Failure) -> UInt64 {
        guard bytes.count - position >= 8 else { throw Failure(offset: base + position, reason: "truncated fixed64") }
        let v = bytes.loadUnaligned(fromByteOffset: position, as: UInt64.self).littleEndian
        position += 8
        return v
    }

    mutating func skip(_ wire: WireType) throws(Failure) {
        switch wire {
        case .varint: _ = try varint()
        case .fixed64: _ = try fixed64()
        case .fixed32: _ = try fixed32()
        case .lengthDelimited: _ = try lengthDelimited()
        case .startGroup, .endGroup: throw Failure(offset: base + position, reason: "groups are not used by ONNX")
        }
    }

    /// A sub-reader over a payload range of this reader.
    func sub(_ range: Range<Int>) -> ProtobufReader {
        ProtobufReader(UnsafeRawBufferPointer(rebasing: bytes[range]), base: base + range.lowerBound)
    }

    func string(_ range: Range<Int>) -> String { String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self) }

    /// Signed integer from a varint (two's complement, as int64 fields are written).
    static func signed(_ v: UInt64) -> Int64 { Int64(bitPattern: v) }
}

/// Minimal DER encoding for the one structure WeightMark writes itself (a TimeStampReq): tag-length-value with
/// definite lengths, INTEGERs from big-endian magnitudes.
enum DERBuilder {
    static func tlv(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] {
        var out = [tag]
        let n = content.count
        if n < 0x80 {
            out.append(UInt8(n))
        } else {
            var len: [UInt8] = []
            var v = n
            while v > 0 { len.insert(UInt8(v & 0xFF), at: 0); v >>= 8 }
            out.append(0x80 | UInt8(len.count))
            out += len
        }
        return out + content
    }

    static func sequence(_ parts: [UInt8]...) -> [UInt8] { tlv(0x30, parts.flatMap { $0 }) }

    /// A non-negative INTEGER from its big-endian magnitude (leading zeros dropped, one 0x00 added when the top bit
    /// is set, as DER requires).
    static func integer(magnitude: [UInt8]) -> [UInt8] {
        var m = Array(magnitude.drop { $0 == 0 })
        if m.isEmpty { m = [0] }
        if m[0] & 0x80 != 0 { m.insert(0, at: 0) }
        return tlv(0x02, m)
    }

    static func integer(_ v: Int) -> [UInt8] {
        precondition(v >= 0)
        return integer(magnitude: withUnsafeBytes(of: UInt64(v).bigEndian) { Array($0) })
    }

    static func octetString(_ b: [UInt8]) -> [UInt8] { tlv(0x04, b) }
    static func boolean(_ b: Bool) -> [UInt8] { tlv(0x01, [b ? 0xFF : 0x00]) }

    /// An OBJECT IDENTIFIER from its dotted components.
    static func objectIdentifier(_ components: [UInt]) -> [UInt8] {
        precondition(components.count >= 2)
        var body: [UInt8] = []
        func base128(_ v: UInt) {
            var groups: [UInt8] = [UInt8(v & 0x7F)]
            var x = v >> 7
            while x > 0 { groups.insert(UInt8(x & 0x7F) | 0x80, at: 0); x >>= 7 }
            body += groups
        }
        base128(components[0] * 40 + components[1])
        for c in components.dropFirst(2) { base128(c) }
        return tlv(0x06, body)
    }
}

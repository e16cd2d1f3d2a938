import Foundation

extension Sequence<UInt8> {
    /// Lower-case hexadecimal, two digits per byte (digests, key ids, secrets in key and opening files).
    public var hexString: String { map { String(format: "%02x", $0) }.joined() }
    var hex: String { hexString }
}

extension Array<UInt8> {
    /// Decodes lower- or upper-case hexadecimal; nil for odd lengths or other characters.
    public init?(hexadecimal text: String) {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: c - 0x30
            case 0x61...0x66: c - 0x61 + 10
            case 0x41...0x46: c - 0x41 + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        for i in stride(from: 0, to: chars.count, by: 2) {
            guard let h = nibble(chars[i]), let l = nibble(chars[i + 1]) else { return nil }
            out.append(h << 4 | l)
        }
        self = out
    }
}

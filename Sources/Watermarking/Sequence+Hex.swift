import Foundation

extension Sequence<UInt8> {
    /// Lower-case hexadecimal, two digits per byte (digests, key ids).
    var hex: String { map { String(format: "%02x", $0) }.joined() }
}

/// Failures of the evidence layer (commitments, openings, timestamps, bundles), each naming the file, the field
/// and what to do.
public enum EvidenceError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A file could not be read or parsed at all.
    case unreadable(path: String, reason: String)
    /// A file parsed but a field is malformed or inconsistent.
    case invalidField(path: String, field: String, reason: String)
    /// A release id that cannot be used.
    case invalidReleaseID(String)
    /// A timestamp response or token that does not verify.
    case timestamp(path: String, field: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): "\(path): \(reason)."
        case let .invalidField(path, field, reason): "\(path): field \"\(field)\": \(reason)."
        case let .invalidReleaseID(id):
            "release id \"\(id)\" is not usable: use 1 to 64 characters among letters, digits, '.', '_' and '-' (e.g. v1.2-2026-11)."
        case let .timestamp(path, field, reason): "\(path): timestamp field \"\(field)\": \(reason)."
        }
    }

    /// The field a verification failure names (nil for unreadable files and bad release ids).
    public var field: String? {
        switch self {
        case let .invalidField(_, field, _), let .timestamp(_, field, _): field
        case .unreadable, .invalidReleaseID: nil
        }
    }
}

extension Sequence<UInt8> {
    /// Lower-case hexadecimal, two digits per byte.
    var hexString: String { map { String(format: "%02x", $0) }.joined() }
}

/// Decodes lower- or upper-case hexadecimal; nil for odd lengths or other characters.
func decodeHex(_ text: String) -> [UInt8]? {
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
    return out
}

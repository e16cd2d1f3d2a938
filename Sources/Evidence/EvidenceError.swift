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

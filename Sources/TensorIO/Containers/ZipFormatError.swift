/// Why a ZIP archive (PyTorch checkpoint, NumPy .npz) was rejected. Offsets are absolute byte offsets in the file.
public enum ZipFormatError: Error, Equatable, Sendable, CustomStringConvertible {
    case noEndOfCentralDirectory
    case invalidZip64Locator(offset: Int)
    case centralDirectoryOutOfBounds(offset: UInt64, size: UInt64, fileSize: Int)
    case truncatedCentralDirectory(entry: Int, offset: Int)
    case badCentralSignature(entry: Int, offset: Int)
    case entryCountMismatch(declared: UInt64, found: Int)
    case invalidName(entry: Int, offset: Int)
    case duplicateName(String)
    case missingZip64Field(name: String, field: String)
    case encrypted(name: String)
    case unsupportedCompression(name: String, method: UInt16)
    case badLocalHeader(name: String, offset: UInt64)
    case localNameMismatch(name: String, local: String)
    case dataOutOfBounds(name: String, start: UInt64, size: UInt64, limit: Int)
    case overlappingEntries(first: String, second: String)
    case storedSizeMismatch(name: String, compressed: UInt64, uncompressed: UInt64)
    case implausibleCompression(name: String, compressed: UInt64, uncompressed: UInt64)
    case inflateFailed(name: String, reason: String)
    case crcMismatch(name: String, expected: UInt32, actual: UInt32)

    public var description: String {
        switch self {
        case .noEndOfCentralDirectory:
            return "no end-of-central-directory record (the archive is truncated or not a ZIP file)"
        case let .invalidZip64Locator(offset):
            return "the ZIP64 end-of-central-directory locator or record at byte \(offset) is invalid"
        case let .centralDirectoryOutOfBounds(offset, size, fileSize):
            return "the central directory (\(size) bytes at byte \(offset)) runs past the end of the \(fileSize)-byte file (truncated)"
        case let .truncatedCentralDirectory(entry, offset):
            return "central-directory entry \(entry) at byte \(offset) is truncated"
        case let .badCentralSignature(entry, offset):
            return "central-directory entry \(entry) at byte \(offset) has no valid signature"
        case let .entryCountMismatch(declared, found):
            return "the end record declares \(declared) entries but the central directory holds \(found)"
        case let .invalidName(entry, offset):
            return "central-directory entry \(entry) at byte \(offset) has a name that is not UTF-8 or is empty"
        case let .duplicateName(name):
            return "the entry \"\(name)\" appears twice (a reader could pick either copy)"
        case let .missingZip64Field(name, field):
            return "entry \"\(name)\": \(field) is 0xFFFFFFFF but no ZIP64 extra field holds the real value"
        case let .encrypted(name):
            return "entry \"\(name)\" is encrypted"
        case let .unsupportedCompression(name, method):
            return "entry \"\(name)\" uses compression method \(method) (only stored and deflated are read)"
        case let .badLocalHeader(name, offset):
            return "entry \"\(name)\": no valid local header at byte \(offset)"
        case let .localNameMismatch(name, local):
            return "entry \"\(name)\": the local header names it \"\(local)\""
        case let .dataOutOfBounds(name, start, size, limit):
            return "entry \"\(name)\": \(size) bytes at byte \(start) run past byte \(limit) (truncated, or the central directory lies about sizes)"
        case let .overlappingEntries(first, second):
            return "entries \"\(first)\" and \"\(second)\" overlap in the file"
        case let .storedSizeMismatch(name, compressed, uncompressed):
            return "stored entry \"\(name)\" declares \(compressed) bytes stored but \(uncompressed) uncompressed"
        case let .implausibleCompression(name, compressed, uncompressed):
            return "entry \"\(name)\" claims \(uncompressed) bytes from \(compressed) compressed bytes, beyond what deflate can produce"
        case let .inflateFailed(name, reason):
            return "entry \"\(name)\" does not inflate: \(reason)"
        case let .crcMismatch(name, expected, actual):
            return "entry \"\(name)\": CRC-32 \(String(actual, radix: 16)) does not match the declared \(String(expected, radix: 16))"
        }
    }
}

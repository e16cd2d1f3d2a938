/// Why a safetensors header or buffer was rejected.
///
/// The cases mirror the rejections of the reference Rust implementation (huggingface/safetensors);
/// `offset` values are absolute byte offsets in the file.
public enum SafetensorsFormatError: Error, Equatable, Sendable, CustomStringConvertible {
    case fileTooSmall(size: Int)
    case headerTooLarge(length: UInt64)
    case headerBeyondFile(length: UInt64, fileSize: Int)
    case invalidUTF8(offset: Int)
    case byteOrderMark
    case invalidJSON(offset: Int, reason: String)
    case headerNotObject
    case duplicateKey(String, offset: Int)
    case invalidMetadata(reason: String)
    case invalidTensorEntry(tensor: String, reason: String)
    case unknownDType(tensor: String, dtype: String)
    case nonIntegerNumber(tensor: String, field: String, text: String)
    case elementCountOverflow(tensor: String)
    case fractionalByteSize(tensor: String, bits: Int)
    case sizeMismatch(tensor: String, expected: Int, actual: Int, offset: Int)
    case invalidOffsets(tensor: String, begin: Int, end: Int, expectedBegin: Int, offset: Int)
    case bufferSizeMismatch(expected: Int, actual: Int, offset: Int)

    public var description: String {
        switch self {
        case let .fileTooSmall(size):
            return "file is \(size) bytes; a safetensors file needs at least the 8-byte header length"
        case let .headerTooLarge(length):
            return "header length \(length) at byte 0 exceeds the 100,000,000-byte limit"
        case let .headerBeyondFile(length, fileSize):
            return "header length \(length) at byte 0 runs past the end of the \(fileSize)-byte file (truncated or not safetensors)"
        case let .invalidUTF8(offset):
            return "header is not valid UTF-8 at byte \(offset)"
        case .byteOrderMark:
            return "header starts with a UTF-8 byte-order mark at byte 8; JSON headers must not carry one"
        case let .invalidJSON(offset, reason):
            return "header is not valid JSON at byte \(offset): \(reason)"
        case .headerNotObject:
            return "header JSON is not an object"
        case let .duplicateKey(key, offset):
            return "duplicate key \"\(key)\" in header at byte \(offset)"
        case let .invalidMetadata(reason):
            return "__metadata__ is invalid: \(reason)"
        case let .invalidTensorEntry(tensor, reason):
            return "tensor \"\(tensor)\": \(reason)"
        case let .unknownDType(tensor, dtype):
            return "tensor \"\(tensor)\": unknown dtype \"\(dtype)\""
        case let .nonIntegerNumber(tensor, field, text):
            return "tensor \"\(tensor)\": \(field) holds \(text), which is not a non-negative integer literal"
        case let .elementCountOverflow(tensor):
            return "tensor \"\(tensor)\": element count or byte size overflows 64 bits"
        case let .fractionalByteSize(tensor, bits):
            return "tensor \"\(tensor)\": \(bits) bits of data is not a whole number of bytes"
        case let .sizeMismatch(tensor, expected, actual, offset):
            return "tensor \"\(tensor)\" at byte \(offset): shape and dtype need \(expected) bytes but data_offsets span \(actual)"
        case let .invalidOffsets(tensor, begin, end, expectedBegin, offset):
            if begin > expectedBegin {
                return "tensor \"\(tensor)\" at byte \(offset): data_offsets [\(begin), \(end)] leave a hole (previous tensor ends at \(expectedBegin))"
            } else if end < begin {
                return "tensor \"\(tensor)\" at byte \(offset): data_offsets [\(begin), \(end)] end before they begin"
            } else {
                return "tensor \"\(tensor)\" at byte \(offset): data_offsets [\(begin), \(end)] overlap or alias the previous tensor (which ends at \(expectedBegin))"
            }
        case let .bufferSizeMismatch(expected, actual, offset):
            if actual > expected {
                return "\(actual - expected) trailing bytes after the last tensor, starting at byte \(offset)"
            }
            return "data buffer is \(actual) bytes but the tensors need \(expected) (file truncated at byte \(offset))"
        }
    }
}

/// Why a GGUF file was rejected. Offsets are absolute byte offsets in the file.
public enum GGUFFormatError: Error, Equatable, Sendable, CustomStringConvertible {
    case badMagic(found: [UInt8])
    case unsupportedVersion(UInt32)
    case truncated(offset: Int, needed: Int, what: String)
    case stringTooLong(offset: Int, length: UInt64)
    case unknownValueType(offset: Int, type: UInt32)
    case arrayTooDeep(offset: Int)
    case duplicateKey(String, offset: Int)
    case duplicateTensor(String, offset: Int)
    case nameTooLong(String, offset: Int)
    case tooManyDimensions(tensor: String, dimensions: UInt32, offset: Int)
    case invalidDimension(tensor: String, offset: Int)
    case unknownTensorType(tensor: String, type: UInt32, offset: Int)
    case rowNotMultipleOfBlock(tensor: String, ne0: Int, block: Int, type: String)
    case sizeOverflow(tensor: String)
    case invalidAlignment(UInt64)
    case misalignedOffset(tensor: String, offset: UInt64, alignment: Int)
    case unexpectedOffset(tensor: String, offset: UInt64, expected: UInt64)
    /// `end` is the absolute end of the tensor's data, nil when it is past 2^64.
    case dataBeyondFile(tensor: String, end: UInt64?, fileSize: Int)
    case countTooLarge(what: String, count: UInt64, offset: Int)
    /// Two tensors whose names map to the same Hugging Face name (e.g. `output_norm.weight` and a literal
    /// `model.norm.weight` in a Llama file).
    case duplicateHuggingFaceName(String, first: String, second: String)

    public var description: String {
        switch self {
        case let .badMagic(found):
            return "bad magic \(found.map { String(format: "%02x", $0) }.joined()) at byte 0 (expected \"GGUF\")"
        case let .unsupportedVersion(v):
            return "GGUF version \(v) at byte 4 is not supported (versions 2 and 3 are)"
        case let .truncated(offset, needed, what):
            return "file ends inside \(what) at byte \(offset) (needs \(needed) more bytes)"
        case let .stringTooLong(offset, length):
            return "string at byte \(offset) claims \(length) bytes, past the end of the file"
        case let .unknownValueType(offset, type):
            return "unknown metadata value type \(type) at byte \(offset)"
        case let .arrayTooDeep(offset):
            return "metadata arrays nested too deeply at byte \(offset)"
        case let .duplicateKey(key, offset):
            return "duplicate metadata key \"\(key)\" at byte \(offset)"
        case let .duplicateTensor(name, offset):
            return "duplicate tensor name \"\(name)\" at byte \(offset)"
        case let .nameTooLong(name, offset):
            return "tensor name \"\(name.prefix(80))…\" at byte \(offset) is 64 bytes or longer (ggml's limit is 63)"
        case let .tooManyDimensions(tensor, dims, offset):
            return "tensor \"\(tensor)\" at byte \(offset) has \(dims) dimensions (ggml allows at most 4)"
        case let .invalidDimension(tensor, offset):
            return "tensor \"\(tensor)\" at byte \(offset) has a dimension of 2^63 or more"
        case let .unknownTensorType(tensor, type, offset):
            return "tensor \"\(tensor)\" at byte \(offset) has unknown ggml type \(type)"
        case let .rowNotMultipleOfBlock(tensor, ne0, block, type):
            return "tensor \"\(tensor)\": ne[0] = \(ne0) is not a multiple of \(type)'s block size \(block)"
        case let .sizeOverflow(tensor):
            return "tensor \"\(tensor)\": element count, byte size or data end overflows 64 bits"
        case let .invalidAlignment(a):
            return "general.alignment = \(a) is not a power of two"
        case let .misalignedOffset(tensor, offset, alignment):
            return "tensor \"\(tensor)\": data offset \(offset) is not a multiple of the alignment \(alignment)"
        case let .unexpectedOffset(tensor, offset, expected):
            return "tensor \"\(tensor)\": data offset \(offset) leaves a gap or overlaps (expected \(expected))"
        case let .dataBeyondFile(tensor, end?, size):
            return "tensor \"\(tensor)\": data ends at byte \(end), past the end of the \(size)-byte file"
        case let .dataBeyondFile(tensor, nil, size):
            return "tensor \"\(tensor)\": data offset plus size runs past 2^64 bytes, far past the end of the \(size)-byte file"
        case let .duplicateHuggingFaceName(name, first, second):
            return "tensors \"\(first)\" and \"\(second)\" both map to the Hugging Face name \"\(name)\"; one name cannot stand for two tensors"
        case let .countTooLarge(what, count, offset):
            return "\(what) count \(count) at byte \(offset) is larger than the file could hold"
        }
    }
}

/// Why the restricted unpickler refused a pickle stream. Offsets are byte offsets in the pickle.
public enum PickleError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A global outside the allowlist: executing the pickle would import (and usually call) it.
    case unsafeGlobal(module: String, name: String, offset: Int)
    case unsupportedOpcode(opcode: UInt8, offset: Int)
    case unsupportedProtocol(Int, offset: Int)
    case truncated(offset: Int)
    case stackUnderflow(opcode: String, offset: Int)
    case wrongType(opcode: String, offset: Int, expected: String)
    case missingMemo(index: UInt64, offset: Int)
    case sealedContainer(opcode: String, offset: Int)
    case tooDeep(limit: Int, offset: Int)
    case invalidString(offset: Int)
    case badPersistentID(offset: Int, reason: String)
    case badCall(callable: String, offset: Int, reason: String)
    case missingStop

    public var description: String {
        switch self {
        case let .unsafeGlobal(module, name, offset):
            return "unsafe pickle: would import \(module).\(name) (byte \(offset)); refused"
        case let .unsupportedOpcode(opcode, offset):
            let name = PickleOpcodeNames.name(of: opcode).map { "\($0) (0x\(String(opcode, radix: 16)))" } ?? "byte 0x\(String(opcode, radix: 16))"
            return "pickle opcode \(name) at byte \(offset) is outside the subset a state dict uses; refused"
        case let .unsupportedProtocol(version, offset):
            return "pickle protocol \(version) at byte \(offset) is not supported (2 to 5 are)"
        case let .truncated(offset):
            return "the pickle ends in the middle of an opcode at byte \(offset)"
        case let .stackUnderflow(opcode, offset):
            return "\(opcode) at byte \(offset) needs more values than the stack holds (malformed pickle)"
        case let .wrongType(opcode, offset, expected):
            return "\(opcode) at byte \(offset) expected \(expected)"
        case let .missingMemo(index, offset):
            return "memo slot \(index) read at byte \(offset) was never written"
        case let .sealedContainer(opcode, offset):
            return "\(opcode) at byte \(offset) modifies a container already placed inside another one (a state dict never does; cycles and memo tricks are refused)"
        case let .tooDeep(limit, offset):
            return "containers nest deeper than \(limit) levels at byte \(offset)"
        case let .invalidString(offset):
            return "the string at byte \(offset) is not valid UTF-8"
        case let .badPersistentID(offset, reason):
            return "persistent id at byte \(offset): \(reason)"
        case let .badCall(callable, offset, reason):
            return "call of \(callable) at byte \(offset): \(reason)"
        case .missingStop:
            return "the pickle has no STOP opcode (truncated)"
        }
    }
}

/// Names of pickle opcodes, for error messages.
enum PickleOpcodeNames {
    static func name(of opcode: UInt8) -> String? {
        switch opcode {
        case UInt8(ascii: "("): "MARK"
        case UInt8(ascii: "."): "STOP"
        case UInt8(ascii: "0"): "POP"
        case UInt8(ascii: "1"): "POP_MARK"
        case UInt8(ascii: "2"): "DUP"
        case UInt8(ascii: "F"): "FLOAT"
        case UInt8(ascii: "I"): "INT"
        case UInt8(ascii: "J"): "BININT"
        case UInt8(ascii: "K"): "BININT1"
        case UInt8(ascii: "L"): "LONG"
        case UInt8(ascii: "M"): "BININT2"
        case UInt8(ascii: "N"): "NONE"
        case UInt8(ascii: "P"): "PERSID"
        case UInt8(ascii: "Q"): "BINPERSID"
        case UInt8(ascii: "R"): "REDUCE"
        case UInt8(ascii: "S"): "STRING"
        case UInt8(ascii: "T"): "BINSTRING"
        case UInt8(ascii: "U"): "SHORT_BINSTRING"
        case UInt8(ascii: "V"): "UNICODE"
        case UInt8(ascii: "X"): "BINUNICODE"
        case UInt8(ascii: "a"): "APPEND"
        case UInt8(ascii: "b"): "BUILD"
        case UInt8(ascii: "c"): "GLOBAL"
        case UInt8(ascii: "d"): "DICT"
        case UInt8(ascii: "}"): "EMPTY_DICT"
        case UInt8(ascii: "e"): "APPENDS"
        case UInt8(ascii: "g"): "GET"
        case UInt8(ascii: "h"): "BINGET"
        case UInt8(ascii: "i"): "INST"
        case UInt8(ascii: "j"): "LONG_BINGET"
        case UInt8(ascii: "l"): "LIST"
        case UInt8(ascii: "]"): "EMPTY_LIST"
        case UInt8(ascii: "o"): "OBJ"
        case UInt8(ascii: "p"): "PUT"
        case UInt8(ascii: "q"): "BINPUT"
        case UInt8(ascii: "r"): "LONG_BINPUT"
        case UInt8(ascii: "s"): "SETITEM"
        case UInt8(ascii: "t"): "TUPLE"
        case UInt8(ascii: ")"): "EMPTY_TUPLE"
        case UInt8(ascii: "u"): "SETITEMS"
        case UInt8(ascii: "G"): "BINFLOAT"
        case 0x80: "PROTO"
        case 0x81: "NEWOBJ"
        case 0x82: "EXT1"
        case 0x83: "EXT2"
        case 0x84: "EXT4"
        case 0x85: "TUPLE1"
        case 0x86: "TUPLE2"
        case 0x87: "TUPLE3"
        case 0x88: "NEWTRUE"
        case 0x89: "NEWFALSE"
        case 0x8A: "LONG1"
        case 0x8B: "LONG4"
        case UInt8(ascii: "B"): "BINBYTES"
        case UInt8(ascii: "C"): "SHORT_BINBYTES"
        case 0x8C: "SHORT_BINUNICODE"
        case 0x8D: "BINUNICODE8"
        case 0x8E: "BINBYTES8"
        case 0x8F: "EMPTY_SET"
        case 0x90: "ADDITEMS"
        case 0x91: "FROZENSET"
        case 0x92: "NEWOBJ_EX"
        case 0x93: "STACK_GLOBAL"
        case 0x94: "MEMOIZE"
        case 0x95: "FRAME"
        case 0x96: "BYTEARRAY8"
        case 0x97: "NEXT_BUFFER"
        case 0x98: "READONLY_BUFFER"
        default: nil
        }
    }
}

/// A pickle reader that never executes anything: it implements the opcodes a PyTorch state dict uses
/// (protocols 2–5) as a stack machine over plain values, resolves globals only from `PickleAllowlist`, and
/// interprets the few allowlisted constructors itself.
///
/// Refused: any other global (named in the error: "would import posix.system"), opcodes outside the subset
/// (INST, OBJ, NEWOBJ, EXT*, the text protocol-0 opcodes, out-of-band buffers…), memo reads of unset slots,
/// mutation of a container after it was placed in another (so no cycles), nesting deeper than `maximumDepth`.
/// Time and memory are linear in the input: every opcode consumes at least one byte and pushes at most one value,
/// and every length is checked against the bytes that remain before anything is allocated.
public struct RestrictedUnpickler {
    /// Deepest container nesting accepted (a state dict nests 3–6 levels).
    public static let maximumDepth = 100

    private let bytes: UnsafeRawBufferPointer
    private var position = 0
    private var stack: [PickleValue] = []
    private var marks: [Int] = []
    private var memo: [UInt64: PickleValue] = [:]

    private init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// Reads one pickle from `bytes` (an in-memory buffer, e.g. `data.pkl`) and returns its value.
    /// - Throws: `PickleError` naming the refused global or opcode and its byte offset.
    public static func unpickle(_ bytes: UnsafeRawBufferPointer) throws(PickleError) -> PickleValue {
        var machine = RestrictedUnpickler(bytes)
        return try machine.run()
    }

    private mutating func run() throws(PickleError) -> PickleValue {
        while position < bytes.count {
            let at = position
            let op = bytes[position]
            position += 1
            switch op {
            case 0x80: // PROTO
                let v = Int(try byte())
                guard (2...5).contains(v) else { throw .unsupportedProtocol(v, offset: at) }
            case 0x95: // FRAME: a length hint only
                _ = try take(8)
            case UInt8(ascii: "."): // STOP
                guard let v = stack.popLast() else { throw .stackUnderflow(opcode: "STOP", offset: at) }
                return v
            case UInt8(ascii: "("): // MARK
                marks.append(stack.count)
            case UInt8(ascii: "0"): // POP
                guard stack.popLast() != nil else { throw .stackUnderflow(opcode: "POP", offset: at) }
            case UInt8(ascii: "1"): // POP_MARK
                _ = try popMark("POP_MARK", at)
            case UInt8(ascii: "2"): // DUP
                guard let v = stack.last else { throw .stackUnderflow(opcode: "DUP", offset: at) }
                stack.append(v)
            case UInt8(ascii: "N"): stack.append(.none)
            case 0x88: stack.append(.bool(true))
            case 0x89: stack.append(.bool(false))
            case UInt8(ascii: "J"): // BININT
                stack.append(.int(Int(Int32(bitPattern: try uint32()))))
            case UInt8(ascii: "K"): // BININT1
                stack.append(.int(Int(try byte())))
            case UInt8(ascii: "M"): // BININT2
                let lo = try byte(), hi = try byte()
                stack.append(.int(Int(lo) | Int(hi) << 8))
            case 0x8A: // LONG1
                let n = Int(try byte())
                stack.append(try long(try take(n)))
            case 0x8B: // LONG4
                let n = Int(Int32(bitPattern: try uint32()))
                guard n >= 0 else { throw .wrongType(opcode: "LONG4", offset: at, expected: "a non-negative length") }
                stack.append(try long(try take(n)))
            case UInt8(ascii: "G"): // BINFLOAT (big-endian)
                let raw = try take(8)
                var bits: UInt64 = 0
                for b in raw { bits = bits << 8 | UInt64(b) }
                stack.append(.float(Double(bitPattern: bits)))
            case UInt8(ascii: "X"): // BINUNICODE
                stack.append(.string(try utf8(try take(Int(try uint32())), at)))
            case 0x8C: // SHORT_BINUNICODE
                stack.append(.string(try utf8(try take(Int(try byte())), at)))
            case 0x8D: // BINUNICODE8
                stack.append(.string(try utf8(try take(try length64(at)), at)))
            case UInt8(ascii: "U"): // SHORT_BINSTRING (protocol 2 str from Python 2: latin-1)
                stack.append(.string(String(decoding: try take(Int(try byte())).map { UInt16($0) }, as: UTF16.self)))
            case UInt8(ascii: "T"): // BINSTRING
                let n = Int(Int32(bitPattern: try uint32()))
                guard n >= 0 else { throw .wrongType(opcode: "BINSTRING", offset: at, expected: "a non-negative length") }
                stack.append(.string(String(decoding: try take(n).map { UInt16($0) }, as: UTF16.self)))
            case UInt8(ascii: "C"): // SHORT_BINBYTES
                stack.append(.bytes(Array(try take(Int(try byte())))))
            case UInt8(ascii: "B"): // BINBYTES
                stack.append(.bytes(Array(try take(Int(try uint32())))))
            case UInt8(ascii: ")"): stack.append(.tuple(PickleTuple([])))
            case UInt8(ascii: "t"): // TUPLE
                let items = try popMark("TUPLE", at)
                stack.append(try tuple(items, at))
            case 0x85, 0x86, 0x87: // TUPLE1-3
                let n = Int(op - 0x84)
                guard stack.count >= n else { throw .stackUnderflow(opcode: "TUPLE\(n)", offset: at) }
                let items = Array(stack.suffix(n))
                stack.removeLast(n)
                stack.append(try tuple(items, at))
            case UInt8(ascii: "]"): stack.append(.list(PickleList()))
            case UInt8(ascii: "l"): // LIST
                let items = try popMark("LIST", at)
                let list = PickleList()
                for v in items { try insert(v, at); list.append(v) }
                try checkDepth(list.depth, at)
                stack.append(.list(list))
            case UInt8(ascii: "}"): stack.append(.dict(PickleDict()))
            case UInt8(ascii: "d"): // DICT
                let items = try popMark("DICT", at)
                guard items.count % 2 == 0 else { throw .wrongType(opcode: "DICT", offset: at, expected: "key/value pairs") }
                let dict = PickleDict()
                for i in stride(from: 0, to: items.count, by: 2) {
                    try insert(items[i], at); try insert(items[i + 1], at)
                    dict.set(items[i], items[i + 1])
                }
                try checkDepth(dict.depth, at)
                stack.append(.dict(dict))
            case UInt8(ascii: "a"): // APPEND
                guard stack.count >= 2 else { throw .stackUnderflow(opcode: "APPEND", offset: at) }
                let v = stack.removeLast()
                try append([v], "APPEND", at)
            case UInt8(ascii: "e"): // APPENDS
                let items = try popMark("APPENDS", at)
                try append(items, "APPENDS", at)
            case UInt8(ascii: "s"): // SETITEM
                guard stack.count >= 3 else { throw .stackUnderflow(opcode: "SETITEM", offset: at) }
                let v = stack.removeLast(), k = stack.removeLast()
                try setItems([k, v], "SETITEM", at)
            case UInt8(ascii: "u"): // SETITEMS
                let items = try popMark("SETITEMS", at)
                guard items.count % 2 == 0 else { throw .wrongType(opcode: "SETITEMS", offset: at, expected: "key/value pairs") }
                try setItems(items, "SETITEMS", at)
            case UInt8(ascii: "q"): // BINPUT
                try put(UInt64(try byte()), at)
            case UInt8(ascii: "r"): // LONG_BINPUT
                try put(UInt64(try uint32()), at)
            case 0x94: // MEMOIZE
                try put(UInt64(memo.count), at)
            case UInt8(ascii: "h"): // BINGET
                try get(UInt64(try byte()), at)
            case UInt8(ascii: "j"): // LONG_BINGET
                try get(UInt64(try uint32()), at)
            case UInt8(ascii: "c"): // GLOBAL "module\nname\n"
                let module = try line(at), name = try line(at)
                stack.append(.global(try resolve(module: module, name: name, at)))
            case 0x93: // STACK_GLOBAL
                guard stack.count >= 2 else { throw .stackUnderflow(opcode: "STACK_GLOBAL", offset: at) }
                let n = stack.removeLast(), m = stack.removeLast()
                guard case let .string(module) = m, case let .string(name) = n else {
                    throw .wrongType(opcode: "STACK_GLOBAL", offset: at, expected: "two strings")
                }
                stack.append(.global(try resolve(module: module, name: name, at)))
            case UInt8(ascii: "i"): // INST "module\nname\n": refused, but name what it would import
                let module = try line(at), name = try line(at)
                throw .unsafeGlobal(module: module, name: name, offset: at)
            case UInt8(ascii: "Q"): // BINPERSID
                guard let pid = stack.popLast() else { throw .stackUnderflow(opcode: "BINPERSID", offset: at) }
                stack.append(.storage(try persistentStorage(pid, at)))
            case UInt8(ascii: "R"): // REDUCE
                guard stack.count >= 2 else { throw .stackUnderflow(opcode: "REDUCE", offset: at) }
                let args = stack.removeLast(), callable = stack.removeLast()
                stack.append(try call(callable, args, at))
            case UInt8(ascii: "b"): // BUILD: state of a dict subclass or tensor (attributes), ignored
                guard stack.count >= 2 else { throw .stackUnderflow(opcode: "BUILD", offset: at) }
                let state = stack.removeLast()
                switch stack[stack.count - 1] {
                case .dict, .tensor: break
                default: throw .wrongType(opcode: "BUILD", offset: at, expected: "a dict or tensor to update")
                }
                try insert(state, at)
                if case let .dict(d) = stack[stack.count - 1], d.sealed { throw .sealedContainer(opcode: "BUILD", offset: at) }
            default:
                throw .unsupportedOpcode(opcode: op, offset: at)
            }
        }
        throw .missingStop
    }

    // MARK: Reading

    private mutating func byte() throws(PickleError) -> UInt8 {
        guard position < bytes.count else { throw .truncated(offset: position) }
        defer { position += 1 }
        return bytes[position]
    }

    private mutating func uint32() throws(PickleError) -> UInt32 {
        let raw = try take(4)
        return UInt32(littleEndian: raw.loadUnaligned(as: UInt32.self))
    }

    private mutating func length64(_ at: Int) throws(PickleError) -> Int {
        let raw = try take(8)
        guard let n = Int(exactly: UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self))) else { throw .truncated(offset: at) }
        return n
    }

    /// The next `count` bytes; checks the count against what remains before anything is allocated.
    private mutating func take(_ count: Int) throws(PickleError) -> UnsafeRawBufferPointer {
        guard count >= 0, count <= bytes.count - position else { throw .truncated(offset: position) }
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + count)])
    }

    /// A newline-terminated ASCII line (GLOBAL and INST arguments), at most 256 bytes.
    private mutating func line(_ at: Int) throws(PickleError) -> String {
        let start = position
        while position < bytes.count && bytes[position] != 0x0A {
            position += 1
            guard position - start <= 256 else { throw .wrongType(opcode: "GLOBAL", offset: at, expected: "a name of at most 256 bytes") }
        }
        guard position < bytes.count else { throw .truncated(offset: at) }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        position += 1
        return text
    }

    private func utf8(_ raw: UnsafeRawBufferPointer, _ at: Int) throws(PickleError) -> String {
        guard let s = String(validating: raw, as: UTF8.self) else { throw .invalidString(offset: at) }
        return s
    }

    /// Two's-complement little-endian integer (LONG1/LONG4).
    private func long(_ raw: UnsafeRawBufferPointer) throws(PickleError) -> PickleValue {
        if raw.isEmpty { return .int(0) }
        guard raw.count <= 8 else { return .largeInt }
        var v: UInt64 = 0
        for (i, b) in raw.enumerated() { v |= UInt64(b) << (8 * UInt64(i)) }
        if raw.count < 8 && raw[raw.count - 1] & 0x80 != 0 { v |= ~0 << (8 * UInt64(raw.count)) }
        return .int(Int(Int64(bitPattern: v)))
    }

    // MARK: Stack and memo

    private mutating func popMark(_ opcode: String, _ at: Int) throws(PickleError) -> [PickleValue] {
        guard let m = marks.popLast(), m <= stack.count else { throw .stackUnderflow(opcode: opcode, offset: at) }
        let items = Array(stack[m...])
        stack.removeSubrange(m...)
        return items
    }

    private mutating func put(_ index: UInt64, _ at: Int) throws(PickleError) {
        guard let v = stack.last else { throw .stackUnderflow(opcode: "PUT", offset: at) }
        memo[index] = v
    }

    private mutating func get(_ index: UInt64, _ at: Int) throws(PickleError) {
        guard let v = memo[index] else { throw .missingMemo(index: index, offset: at) }
        stack.append(v)
    }

    private func checkDepth(_ depth: Int, _ at: Int) throws(PickleError) {
        guard depth <= Self.maximumDepth else { throw .tooDeep(limit: Self.maximumDepth, offset: at) }
    }

    /// Seals a value placed inside a container: from now on it cannot change, so no cycle can form.
    private func insert(_ v: PickleValue, _ at: Int) throws(PickleError) {
        switch v {
        case let .list(l): l.sealed = true
        case let .dict(d): d.sealed = true
        default: break
        }
        try checkDepth(v.depth + 1, at)
    }

    private func tuple(_ items: [PickleValue], _ at: Int) throws(PickleError) -> PickleValue {
        for v in items { try insert(v, at) }
        return .tuple(PickleTuple(items))
    }

    private mutating func append(_ items: [PickleValue], _ opcode: String, _ at: Int) throws(PickleError) {
        guard case let .list(list)? = stack.last else { throw .wrongType(opcode: opcode, offset: at, expected: "a list") }
        for v in items {
            try insert(v, at)
            // Checked after sealing `v`, so appending a list to itself is refused too.
            guard !list.sealed else { throw .sealedContainer(opcode: opcode, offset: at) }
            list.append(v)
        }
    }

    private mutating func setItems(_ items: [PickleValue], _ opcode: String, _ at: Int) throws(PickleError) {
        guard case let .dict(dict)? = stack.last else { throw .wrongType(opcode: opcode, offset: at, expected: "a dict") }
        for i in stride(from: 0, to: items.count, by: 2) {
            try insert(items[i], at); try insert(items[i + 1], at)
            guard !dict.sealed else { throw .sealedContainer(opcode: opcode, offset: at) }
            dict.set(items[i], items[i + 1])
        }
    }

    // MARK: Globals and calls

    private func resolve(module: String, name: String, _ at: Int) throws(PickleError) -> PickleGlobal {
        guard PickleAllowlist.role(module: module, name: name) != nil else {
            throw .unsafeGlobal(module: module, name: name, offset: at)
        }
        return PickleGlobal(module: module, name: name)
    }

    /// `('storage', torch.<X>Storage, key, location, numel)`.
    private func persistentStorage(_ pid: PickleValue, _ at: Int) throws(PickleError) -> PickleStorage {
        guard case let .tuple(t) = pid, t.items.count == 5, case .string("storage") = t.items[0] else {
            throw .badPersistentID(offset: at, reason: "expected ('storage', class, key, location, numel), got \(pid.typeName)")
        }
        guard case let .global(cls) = t.items[1], cls.module == "torch", PickleAllowlist.storageDTypes[cls.name] != nil else {
            throw .badPersistentID(offset: at, reason: "the storage class is \(t.items[1].typeName), not a torch storage type WeightMark reads")
        }
        guard case let .string(key) = t.items[2], !key.isEmpty else { throw .badPersistentID(offset: at, reason: "the key is not a string") }
        guard case let .string(location) = t.items[3] else { throw .badPersistentID(offset: at, reason: "the location is not a string") }
        guard case let .int(numel) = t.items[4], numel >= 0 else {
            throw .badPersistentID(offset: at, reason: "the element count is not a non-negative integer")
        }
        return PickleStorage(storageClass: cls.name, key: key, location: location, elementCount: numel)
    }

    private func call(_ callable: PickleValue, _ args: PickleValue, _ at: Int) throws(PickleError) -> PickleValue {
        guard case let .global(g) = callable, let role = PickleAllowlist.role(module: g.module, name: g.name) else {
            throw .wrongType(opcode: "REDUCE", offset: at, expected: "an allowlisted callable, got \(callable.typeName)")
        }
        guard case let .tuple(argTuple) = args else {
            throw .badCall(callable: g.qualifiedName, offset: at, reason: "arguments are \(args.typeName), not a tuple")
        }
        for v in argTuple.items { try insert(v, at) }
        let a = argTuple.items
        func fail(_ reason: String) -> PickleError { .badCall(callable: g.qualifiedName, offset: at, reason: reason) }
        switch role {
        case .orderedDict:
            let d = PickleDict()
            if a.isEmpty { return .dict(d) }
            guard a.count == 1 else { throw fail("expected at most one argument") }
            let pairs: [PickleValue]
            switch a[0] {
            case let .list(l): pairs = l.items
            case let .tuple(t): pairs = t.items
            default: throw fail("expected a list of pairs")
            }
            for p in pairs {
                guard case let .tuple(kv) = p, kv.items.count == 2 else { throw fail("expected (key, value) pairs") }
                d.set(kv.items[0], kv.items[1])
            }
            return .dict(d)
        case .rebuildTensor:
            guard a.count >= 4, a.count <= 7 else { throw fail("expected 4 to 7 arguments, got \(a.count)") }
            guard case let .storage(s) = a[0] else { throw fail("the first argument is \(a[0].typeName), not a storage") }
            guard case let .int(offset) = a[1] else { throw fail("the storage offset is not an integer") }
            let shape = try ints(a[2], fail, "size"), strides = try ints(a[3], fail, "stride")
            guard shape.count == strides.count else { throw fail("size has \(shape.count) dimensions but stride \(strides.count)") }
            return .tensor(PickleTensor(storage: s, storageOffset: offset, shape: shape, strides: strides))
        case .rebuildParameter:
            guard a.count >= 1, case .tensor = a[0] else { throw fail("the first argument is not a tensor") }
            return a[0]
        case .rebuildFromType:
            guard a.count == 4, case let .global(f) = a[0], case let .global(type) = a[1], case .tuple = a[2] else {
                throw fail("expected (function, type, args, state)")
            }
            guard PickleAllowlist.tensorTypes.contains(type.qualifiedName) else { throw fail("type \(type.qualifiedName) is not a plain tensor type") }
            if case let .dict(state) = a[3], !state.items.isEmpty { throw fail("tensor subclasses with state are not read") }
            return try call(.global(f), a[2], at)
        case .encodeBytes:
            guard a.count == 2, case let .string(text) = a[0], case let .string(encoding) = a[1],
                  encoding == "latin1" || encoding == "latin-1" else { throw fail("expected (str, 'latin1')") }
            var out: [UInt8] = []
            for u in text.unicodeScalars {
                guard u.value < 256 else { throw fail("a character above U+00FF") }
                out.append(UInt8(u.value))
            }
            return .bytes(out)
        case .size:
            guard a.count == 1, case .tuple = a[0] else { throw fail("expected one tuple") }
            return a[0]
        case .device:
            guard let first = a.first else { throw fail("expected a device name") }
            return first
        case .inert:
            throw fail("it is not callable here")
        }
    }

    private func ints(_ v: PickleValue, _ fail: (String) -> PickleError, _ what: String) throws(PickleError) -> [Int] {
        guard case let .tuple(t) = v else { throw fail("\(what) is \(v.typeName), not a tuple") }
        var out: [Int] = []
        for item in t.items {
            guard case let .int(i) = item else { throw fail("\(what) holds \(item.typeName), not an integer") }
            out.append(i)
        }
        return out
    }
}

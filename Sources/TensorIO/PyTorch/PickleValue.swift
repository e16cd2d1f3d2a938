/// A value built by the restricted unpickler. Nothing here can run code: globals are inert names from an
/// allowlist, and the only "calls" are the few constructors a state dict needs, interpreted by WeightMark.
public enum PickleValue: Sendable {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer wider than 64 bits (kept only as a marker; state dicts never need its value).
    case largeInt
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple(PickleTuple)
    case list(PickleList)
    case dict(PickleDict)
    case global(PickleGlobal)
    /// A storage reference from a persistent id: `('storage', torch.<X>Storage, key, location, numel)`.
    case storage(PickleStorage)
    case tensor(PickleTensor)

    /// Nesting depth (1 for scalars), maintained at construction so deep structures are refused before they exist.
    var depth: Int {
        switch self {
        case let .tuple(t): t.depth
        case let .list(l): l.depth
        case let .dict(d): d.depth
        default: 1
        }
    }

    var typeName: String {
        switch self {
        case .none: "None"
        case .bool: "bool"
        case .int, .largeInt: "int"
        case .float: "float"
        case .string: "str"
        case .bytes: "bytes"
        case .tuple: "tuple"
        case .list: "list"
        case .dict: "dict"
        case let .global(g): "\(g.module).\(g.name)"
        case .storage: "storage"
        case .tensor: "tensor"
        }
    }
}

/// An immutable tuple.
public final class PickleTuple: Sendable {
    public let items: [PickleValue]
    let depth: Int
    init(_ items: [PickleValue]) {
        self.items = items
        depth = 1 + (items.map(\.depth).max() ?? 0)
    }
}

/// A list. Mutable only until it is placed inside another container ("sealed"), which rules out cycles.
/// Sendable: mutated only inside `RestrictedUnpickler.unpickle`, on the one thread running it, before it escapes;
/// read-only once the unpickler has returned.
public final class PickleList: @unchecked Sendable {
    public private(set) var items: [PickleValue] = []
    private(set) var depth = 1
    var sealed = false
    func append(_ v: PickleValue) {
        items.append(v)
        depth = max(depth, v.depth + 1)
    }
}

/// A dict (also `collections.OrderedDict`), in insertion order; a repeated string key replaces the earlier value,
/// as in Python. Mutable only until sealed, like `PickleList`.
/// Sendable: mutated only inside `RestrictedUnpickler.unpickle`, on the one thread running it, before it escapes;
/// read-only once the unpickler has returned.
public final class PickleDict: @unchecked Sendable {
    public private(set) var items: [(key: PickleValue, value: PickleValue)] = []
    private var stringIndex: [String: Int] = [:]
    private(set) var depth = 1
    var sealed = false

    func set(_ key: PickleValue, _ value: PickleValue) {
        depth = max(depth, key.depth + 1, value.depth + 1)
        if case let .string(s) = key {
            if let i = stringIndex[s] { items[i].value = value; return }
            stringIndex[s] = items.count
        }
        items.append((key, value))
    }

    public subscript(key: String) -> PickleValue? { stringIndex[key].map { items[$0].value } }
}

/// An allowlisted global (see `PickleAllowlist`).
public struct PickleGlobal: Sendable, Equatable {
    public var module: String
    public var name: String
    public var qualifiedName: String { "\(module).\(name)" }
}

/// A storage named by a persistent id: its element type (the storage class), archive key, device and element count.
public struct PickleStorage: Sendable, Equatable {
    public var storageClass: String
    public var key: String
    public var location: String
    public var elementCount: Int
}

/// A tensor view of a storage, as `torch._utils._rebuild_tensor_v2` describes it (sizes, strides and offset in elements).
public struct PickleTensor: Sendable, Equatable {
    public var storage: PickleStorage
    public var storageOffset: Int
    public var shape: [Int]
    public var strides: [Int]
}

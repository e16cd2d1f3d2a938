/// The tensors of a PyTorch zip checkpoint (torch ≥ 1.6), worked out from the archive's bytes alone:
/// the checked central directory, `<prefix>/data.pkl` read by the restricted unpickler, and each tensor's view
/// validated against its `<prefix>/data/<key>` storage. Pure parsing over a buffer, so fuzz targets can call it.
public struct PyTorchArchiveLayout: Sendable {
    /// One tensor: its view, and the archive entry holding its storage (stored, read in place).
    public struct Tensor: Sendable, Equatable {
        public var view: StridedTensor
        public var storage: ZipEntry
    }

    public var prefix: String
    /// Tensors in the order of the state dict.
    public var tensors: [Tensor]
    /// Size of `data.pkl` in bytes.
    public var pickleBytes: Int

    /// Why a checkpoint was refused.
    public enum Failure: Error, Sendable {
        case zip(ZipFormatError)
        case pickle(entry: String, PickleError)
        case layout(String)
    }

    /// Reads the layout of the checkpoint in `file` (the whole archive).
    public static func parse(file: UnsafeRawBufferPointer) throws(Failure) -> PyTorchArchiveLayout {
        let directory: ZipDirectory
        do { directory = try ZipDirectory.parse(file: file) } catch { throw .zip(error) }
        return try parse(directory: directory, file: file)
    }

    static func parse(directory: ZipDirectory, file: UnsafeRawBufferPointer) throws(Failure) -> PyTorchArchiveLayout {
        let pickles = directory.entries.filter { $0.name.hasSuffix("/data.pkl") && $0.name.split(separator: "/", omittingEmptySubsequences: false).count == 2 }
        guard pickles.count == 1, let pkl = pickles.first else {
            throw .layout(pickles.isEmpty ? "the archive has no <prefix>/data.pkl (a ZIP, but not a torch.save checkpoint)"
                                          : "the archive has \(pickles.count) data.pkl files")
        }
        let prefix = String(pkl.name.dropLast("/data.pkl".count))
        let pickleBytes: [UInt8]
        do {
            pickleBytes = try ZipArchive.contents(of: pkl, in: UnsafeRawBufferPointer(rebasing: file[pkl.dataRange]))
        } catch { throw .zip(error) }
        let root: PickleValue
        do {
            root = try pickleBytes.withUnsafeBytes { try RestrictedUnpickler.unpickle($0) }
        } catch let e as PickleError {
            throw .pickle(entry: pkl.name, e)
        } catch {
            throw .layout("\(error)")
        }
        let named: [(String, PickleTensor)]
        do { named = try StateDict.tensors(in: root) } catch { throw .layout(error.reason) }
        var storages: [String: (PickleStorage, ZipEntry)] = [:]
        var out: [Tensor] = []
        for (name, t) in named {
            let key = t.storage.key
            let storage: ZipEntry
            if let (seen, entry) = storages[key] {
                guard seen == t.storage else {
                    throw .layout("storage \"\(key)\" is declared twice with different types or sizes (tensor \"\(name)\")")
                }
                storage = entry
            } else {
                let entryName = "\(prefix)/data/\(key)"
                guard let entry = directory.entry(named: entryName) else {
                    throw .layout("tensor \"\(name)\" uses storage \"\(key)\" but the archive has no entry \(entryName)")
                }
                guard entry.method == .stored else {
                    throw .layout("storage entry \(entryName) is compressed; torch.save stores storages uncompressed")
                }
                let dtype = PickleAllowlist.storageDTypes[t.storage.storageClass]!
                let (bytes, o) = t.storage.elementCount.multipliedReportingOverflow(by: dtype.bitCount / 8)
                guard !o, bytes == entry.uncompressedSize else {
                    throw .layout("storage \(entryName) declares \(t.storage.elementCount) elements of \(dtype.rawValue) but holds \(entry.uncompressedSize) bytes")
                }
                storages[key] = (t.storage, entry)
                storage = entry
            }
            let dtype = PickleAllowlist.storageDTypes[t.storage.storageClass]!
            do {
                let view = try StridedTensor.validated(name: name, dtype: dtype, shape: t.shape, strides: t.strides,
                                                       storageOffset: t.storageOffset, storageElements: t.storage.elementCount)
                out.append(Tensor(view: view, storage: storage))
            } catch {
                throw .layout(error.description)
            }
        }
        return PyTorchArchiveLayout(prefix: prefix, tensors: out, pickleBytes: pickleBytes.count)
    }
}

/// Finds the tensors of a state dict in an unpickled value.
enum StateDict {
    struct Failure: Error { var reason: String }

    /// Keys under which training checkpoints commonly nest the model's state dict.
    static let wrapperKeys = ["state_dict", "model", "model_state_dict", "module", "net", "params"]

    /// Tensors by dotted name. A dict holding tensors directly is the state dict; otherwise one nested under a
    /// usual wrapper key (`{"model": state_dict, "epoch": …}`) is taken; otherwise every nested dict is flattened
    /// with dotted names. Values that are not tensors or dicts (ints, optimizer lists) are ignored; a dict reached
    /// twice (shared through the memo) is read once.
    static func tensors(in root: PickleValue) throws(Failure) -> [(String, PickleTensor)] {
        guard case let .dict(top) = root else { throw Failure(reason: "data.pkl holds a \(root.typeName), not a dict of tensors") }
        var scope = top
        let hasDirect = top.items.contains { if case .tensor = $0.value { return true } else { return false } }
        if !hasDirect {
            for key in wrapperKeys {
                if case let .dict(inner)? = top[key], containsTensor(inner) { scope = inner; break }
            }
        }
        var out: [(String, PickleTensor)] = []
        var names = Set<String>()
        var visited = Set<ObjectIdentifier>()
        func walk(_ d: PickleDict, _ prefix: String) throws(Failure) {
            guard visited.insert(ObjectIdentifier(d)).inserted else { return }
            for (k, v) in d.items {
                guard case let .string(key) = k else { continue }
                let name = prefix + key
                switch v {
                case let .tensor(t):
                    guard names.insert(name).inserted else { throw Failure(reason: "two tensors are named \"\(name)\"") }
                    out.append((name, t))
                case let .dict(inner):
                    try walk(inner, name + ".")
                default:
                    continue
                }
            }
        }
        try walk(scope, "")
        guard !out.isEmpty else { throw Failure(reason: "data.pkl holds no tensors (not a state dict)") }
        return out
    }

    private static func containsTensor(_ d: PickleDict) -> Bool {
        var visited = Set<ObjectIdentifier>()
        func any(_ d: PickleDict) -> Bool {
            guard visited.insert(ObjectIdentifier(d)).inserted else { return false }
            return d.items.contains { item in
                switch item.value {
                case .tensor: true
                case let .dict(inner): any(inner)
                default: false
                }
            }
        }
        return any(d)
    }
}

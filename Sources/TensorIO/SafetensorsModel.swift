import Foundation

/// A tensor of a model: where it lives (which shard) and what it holds.
public struct ModelTensor: Sendable, Equatable, Hashable {
    public var descriptor: TensorDescriptor
    /// Index into `SafetensorsModel.shards`.
    public var shard: Int
    public var name: String { descriptor.name }
    public var dtype: DType { descriptor.dtype }
    public var shape: [Int] { descriptor.shape }
}

/// A model stored as safetensors: one file, a folder holding `model.safetensors`, or a sharded
/// Hugging Face folder (`model.safetensors.index.json` plus shards). Every command reads models
/// through this one type.
/// Sendable: immutable after init: shards are read-only mappings; `release` only advises the kernel (madvise).
public final class SafetensorsModel: @unchecked Sendable {
    public enum Layout: Sendable, Equatable {
        /// A bare `.safetensors` file.
        case file
        /// A folder with one safetensors file and no index.
        case folder(fileName: String)
        /// A folder with an index naming the shards.
        case sharded
    }

    public static let indexFileName = "model.safetensors.index.json"

    public let path: String
    public let layout: Layout
    public let shards: [SafetensorsFile]
    /// Shard file names relative to the folder (the file name itself for `.file`).
    public let shardNames: [String]
    /// All tensors, shard by shard in data order.
    public let tensors: [ModelTensor]
    /// The index's `metadata` object (sharded layout only), in file order.
    public let indexMetadata: [JSONMember]
    private let byName: [String: Int]

    /// Opens a model at `path`.
    /// - Throws: `TensorIOError` naming the file and the problem.
    public init(path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw TensorIOError.cannotOpen(path: path, reason: "no such file or directory")
        }
        self.path = path
        var shardFiles: [SafetensorsFile] = []
        var names: [String] = []
        var meta: [JSONMember] = []
        var weightMap: [String: String]?
        if !isDir.boolValue {
            let format = try FileFormat.detect(path: path)
            if format != .safetensors {
                throw TensorIOError.notSafetensors(path: path, format: format)
            }
            layout = .file
            shardFiles = [try SafetensorsFile(path: path)]
            names = [(path as NSString).lastPathComponent]
        } else {
            let indexPath = (path as NSString).appendingPathComponent(SafetensorsModel.indexFileName)
            if FileManager.default.fileExists(atPath: indexPath) {
                layout = .sharded
                let parsed = try SafetensorsModel.parseIndex(at: indexPath)
                meta = parsed.metadata
                weightMap = parsed.weightMap
                names = parsed.shardNames
                for n in names {
                    let p = (path as NSString).appendingPathComponent(n)
                    guard FileManager.default.fileExists(atPath: p) else {
                        throw TensorIOError.invalidIndex(path: indexPath, reason: "shard \"\(n)\" named in weight_map does not exist")
                    }
                    shardFiles.append(try SafetensorsFile(path: p))
                }
            } else {
                let entries = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
                let candidates = entries.filter { $0.hasSuffix(".safetensors") }.sorted()
                let chosen: String
                if candidates.contains("model.safetensors") {
                    chosen = "model.safetensors"
                } else if candidates.count == 1 {
                    chosen = candidates[0]
                } else if candidates.isEmpty {
                    throw TensorIOError.notAModel(path: path, reason: "the folder has no .safetensors file")
                } else {
                    throw TensorIOError.notAModel(path: path, reason: "the folder has \(candidates.count) .safetensors files but no \(SafetensorsModel.indexFileName)")
                }
                layout = .folder(fileName: chosen)
                names = [chosen]
                shardFiles = [try SafetensorsFile(path: (path as NSString).appendingPathComponent(chosen))]
            }
        }
        var all: [ModelTensor] = []
        var index: [String: Int] = [:]
        for (s, file) in shardFiles.enumerated() {
            for d in file.tensors {
                if let previous = index[d.name] {
                    throw TensorIOError.notAModel(path: path, reason: "tensor \"\(d.name)\" appears in both \(names[all[previous].shard]) and \(names[s])")
                }
                if let weightMap {
                    guard weightMap[d.name] == names[s] else {
                        let idx = (path as NSString).appendingPathComponent(SafetensorsModel.indexFileName)
                        throw TensorIOError.invalidIndex(path: idx, reason: weightMap[d.name] == nil
                            ? "tensor \"\(d.name)\" in \(names[s]) is missing from weight_map"
                            : "weight_map puts \"\(d.name)\" in \(weightMap[d.name]!) but it is in \(names[s])")
                    }
                }
                index[d.name] = all.count
                all.append(ModelTensor(descriptor: d, shard: s))
            }
        }
        if let weightMap {
            for (name, shard) in weightMap where index[name] == nil {
                let idx = (path as NSString).appendingPathComponent(SafetensorsModel.indexFileName)
                throw TensorIOError.invalidIndex(path: idx, reason: "weight_map lists \"\(name)\" in \(shard), but that shard has no such tensor")
            }
        }
        shards = shardFiles
        shardNames = names
        tensors = all
        byName = index
        indexMetadata = meta
    }

    struct ParsedIndex {
        var metadata: [JSONMember]
        var weightMap: [String: String]
        var shardNames: [String]
    }

    static func parseIndex(at indexPath: String) throws -> ParsedIndex {
        guard let data = FileManager.default.contents(atPath: indexPath) else {
            throw TensorIOError.cannotOpen(path: indexPath, reason: "unreadable")
        }
        let root: JSONValue
        do {
            root = try data.withUnsafeBytes { (b) throws(JSONSyntaxError) in try JSONParser.parse(b) }
        } catch let e as JSONSyntaxError {
            throw TensorIOError.invalidIndex(path: indexPath, reason: "invalid JSON at byte \(e.offset): \(e.reason)")
        }
        guard case let .object(members) = root else {
            throw TensorIOError.invalidIndex(path: indexPath, reason: "top level is not an object")
        }
        var metadata: [JSONMember] = []
        var weightMap: [String: String]?
        var shardNames: [String] = []
        for m in members {
            if m.key == "metadata", case let .object(mm) = m.value { metadata = mm }
            if m.key == "weight_map" {
                guard case let .object(wm) = m.value else {
                    throw TensorIOError.invalidIndex(path: indexPath, reason: "weight_map is not an object")
                }
                var map: [String: String] = [:]
                for e in wm {
                    guard case let .string(file) = e.value else {
                        throw TensorIOError.invalidIndex(path: indexPath, reason: "weight_map value for \"\(e.key)\" is not a string")
                    }
                    guard !file.contains("/"), file != "..", file != ".", !file.isEmpty else {
                        throw TensorIOError.invalidIndex(path: indexPath, reason: "shard name \"\(file)\" must be a plain file name in the same folder")
                    }
                    guard map.updateValue(file, forKey: e.key) == nil else {
                        throw TensorIOError.invalidIndex(path: indexPath, reason: "tensor \"\(e.key)\" listed twice")
                    }
                    if !shardNames.contains(file) { shardNames.append(file) }
                }
                weightMap = map
            }
        }
        guard let weightMap else { throw TensorIOError.invalidIndex(path: indexPath, reason: "missing weight_map") }
        return ParsedIndex(metadata: metadata, weightMap: weightMap, shardNames: shardNames.sorted())
    }

    public func tensor(named name: String) -> ModelTensor? { byName[name].map { tensors[$0] } }

    /// The file holding `t`.
    public func file(of t: ModelTensor) -> SafetensorsFile { shards[t.shard] }

    public func floats(of t: ModelTensor) throws -> [Float] { try shards[t.shard].floats(of: t.descriptor) }

    public func withBytes<R>(of t: ModelTensor, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try shards[t.shard].withBytes(of: t.descriptor, body)
    }

    /// Releases the tensor's mapped pages from this process's resident set.
    public func release(_ t: ModelTensor) { shards[t.shard].release(t.descriptor) }

    public var parameterCount: Int { tensors.reduce(0) { $0 + $1.descriptor.elementCount } }
    public var tensorBytes: Int { tensors.reduce(0) { $0 + $1.descriptor.byteCount } }
    /// On-disk size of all shard files.
    public var fileBytes: Int { shards.reduce(0) { $0 + $1.mapping.size } }

    /// Other files of a model folder (config, tokenizer, sentence-transformers modules such as `1_Pooling/`, …),
    /// as paths relative to the folder, subfolders included; a rewrite copies them unchanged. Hidden entries
    /// (`.git`, `.cache`, …) are left out.
    public var auxiliaryFiles: [String] {
        guard layout != .file else { return [] }
        var out: [String] = []
        let fm = FileManager.default
        guard let walk = fm.enumerator(atPath: path) else { return [] }
        while let relative = walk.nextObject() as? String {
            let components = relative.split(separator: "/")
            if components.contains(where: { $0.hasPrefix(".") }) {
                walk.skipDescendants()
                continue
            }
            if components.count > 8 { walk.skipDescendants(); continue } // no model folder nests deeper
            var isDir: ObjCBool = false
            let full = (path as NSString).appendingPathComponent(relative)
            // A link whose target is gone stays in the list: copying it then fails with an error naming it.
            let dangling = !fm.fileExists(atPath: full) && (try? fm.destinationOfSymbolicLink(atPath: full)) != nil
            guard dangling || (fm.fileExists(atPath: full, isDirectory: &isDir) && !isDir.boolValue) else { continue }
            if components.count == 1, shardNames.contains(relative) || relative == SafetensorsModel.indexFileName { continue }
            out.append(relative)
        }
        return out.sorted()
    }

    /// The auxiliary files that hold weights of their own (another format's copy such as `pytorch_model.bin`,
    /// `tf_model.h5`, `flax_model.msgpack`, a second `.safetensors`, a sentence-transformers `2_Dense/` layer, …):
    /// copied next to a marked model they would ship unmarked. Recognized by name or by content (the magic bytes of
    /// zip/PyTorch, pickle, HDF5, GGUF, NumPy, safetensors), from 64 KiB up: small pickles such as
    /// `training_args.bin` hold no weight matrix worth marking.
    public var auxiliaryWeightFiles: [String] {
        auxiliaryFiles.filter { SafetensorsModel.holdsWeights(path: (path as NSString).appendingPathComponent($0)) }
    }

    static let weightExtensions: Set<String> = [
        "bin", "pt", "pth", "ckpt", "h5", "hdf5", "keras", "msgpack", "ot", "onnx", "gguf", "ggml", "npz", "npy",
        "safetensors", "tflite", "mlmodel", "pkl", "joblib", "pdparams", "params", "nemo", "llamafile",
    ]

    static func holdsWeights(path: String) -> Bool {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
              let size = (attributes[.size] as? NSNumber)?.intValue, size >= 64 << 10 else { return false }
        let name = (path as NSString).lastPathComponent.lowercased()
        if weightExtensions.contains((name as NSString).pathExtension) || name.hasPrefix("variables.data-") { return true }
        guard let h = FileHandle(forReadingAtPath: path) else { return true } // unreadable: copying would fail anyway
        defer { try? h.close() }
        let head = [UInt8](h.readData(ofLength: 16))
        guard head.count >= 8 else { return false }
        if head.starts(with: [0x50, 0x4B, 0x03, 0x04]) || head.starts(with: [0x89, 0x48, 0x44, 0x46])
            || head.starts(with: Array("GGUF".utf8)) || head.starts(with: [0x93] + Array("NUMPY".utf8))
            || (head[0] == 0x80 && (2...5).contains(head[1])) {
            return true
        }
        // safetensors: u64 header length that fits the file, then '{'
        let n = head.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        return n > 0 && n < UInt64(size) && head.count > 8 && head[8] == UInt8(ascii: "{")
    }
}

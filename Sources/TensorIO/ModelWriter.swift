import CTensorIOKernels
import Foundation

/// Writes models in the same layout as a source model: a file stays a file, a folder stays a folder
/// (auxiliary files copied), a sharded folder keeps its shard names, index and metadata.
///
/// Folder outputs are built in a temporary sibling folder and renamed into place when complete, so a
/// failure leaves nothing at the destination.
public enum ModelWriter {
    /// Rewrites `source` to `destination`, each tensor given by `transform` (shard by shard, in data order).
    /// - Parameters:
    ///   - overwrite: replace an existing destination; otherwise its existence is an error.
    ///   - auxiliaryFiles: the other files of a model folder to copy (default: all of `source.auxiliaryFiles`).
    ///   - observer: sees every byte of each safetensors file written (file name, bytes in file order).
    ///   - transform: the output for a source tensor; return `nil` to copy it byte for byte.
    /// - Returns: the output files written (absolute or as given).
    @discardableResult
    public static func write(like source: SafetensorsModel, to destination: String, overwrite: Bool,
                             auxiliaryFiles: [String]? = nil,
                             observer: ((String, UnsafeRawBufferPointer) -> Void)? = nil,
                             transform: @escaping (ModelTensor) throws -> OutputTensor?) throws -> [String] {
        func outputs(forShard s: Int) throws -> [OutputTensor] {
            try source.tensors.filter { $0.shard == s }.map { t in
                if let replaced = try transform(t) { return replaced }
                return OutputTensor(name: t.name, dtype: t.dtype, shape: t.shape) { sink in
                    try source.withBytes(of: t) { try sink($0) }
                }
            }
        }
        switch source.layout {
        case .file:
            let name = (destination as NSString).lastPathComponent
            try SafetensorsWriter.write(try outputs(forShard: 0), metadata: source.shards[0].metadata,
                                        to: destination, overwrite: overwrite, observer: observer.map { o in { o(name, $0) } })
            return [destination]
        case .folder, .sharded:
            let files = try source.shards.indices.map { s in
                ShardSpec(fileName: source.shardNames[s], tensors: try outputs(forShard: s),
                          metadata: source.shards[s].metadata)
            }
            return try writeFolder(files, indexMetadata: source.layout == .sharded ? source.indexMetadata : nil,
                                   auxiliaryFrom: source.path, auxiliaryFiles: auxiliaryFiles ?? source.auxiliaryFiles,
                                   to: destination, overwrite: overwrite, observer: observer)
        }
    }

    /// The order in which `write(like:…)` asks for tensors (shard by shard, reference order within a
    /// shard), for callers that compute outputs ahead of the writer.
    public static func productionOrder(of source: SafetensorsModel) -> [ModelTensor] {
        source.shards.indices.flatMap { s in
            source.tensors.filter { $0.shard == s }
                .sorted { SafetensorsWriter.referenceOrder(($0.name, $0.dtype), ($1.name, $1.dtype)) }
        }
    }

    /// One safetensors file of a folder.
    public struct ShardSpec {
        public var fileName: String
        public var tensors: [OutputTensor]
        public var metadata: [(key: String, value: String)]?
        public init(fileName: String, tensors: [OutputTensor], metadata: [(key: String, value: String)]?) {
            self.fileName = fileName; self.tensors = tensors; self.metadata = metadata
        }
    }

    /// Writes a model folder. With `indexMetadata` non-nil an index is written whose `total_size` is
    /// recomputed and whose other metadata members are kept.
    @discardableResult
    public static func writeFolder(_ shards: [ShardSpec], indexMetadata: [JSONMember]?,
                                   auxiliaryFrom sourceFolder: String? = nil, auxiliaryFiles: [String] = [],
                                   to given: String, overwrite: Bool,
                                   observer: ((String, UnsafeRawBufferPointer) -> Void)? = nil) throws -> [String] {
        let destination = AtomicFileWriter.trimmingTrailingSlashes(given)
        let fm = FileManager.default
        if fm.fileExists(atPath: destination) && !overwrite { throw TensorIOError.outputExists(path: destination) }
        let parent = AtomicFileWriter.directory(of: destination)
        let base = (destination as NSString).lastPathComponent
        let staging = "\(parent)/.\(base).tmp-\(UInt32.random(in: 0...UInt32.max))"
        do {
            try fm.createDirectory(atPath: staging, withIntermediateDirectories: false)
        } catch {
            throw TensorIOError.writeFailed(path: destination, reason: "cannot create \(staging): \(error.localizedDescription)")
        }
        var committed = false
        // The staging folder and everything written into it are removed if the process is interrupted.
        var slots = [weightmark_register_temporary(staging)]
        defer {
            if !committed { try? fm.removeItem(atPath: staging) }
            for s in slots { weightmark_unregister_temporary(s) }
        }
        var weightMap: [JSONMember] = []
        var totalSize = 0
        for shard in shards {
            try SafetensorsWriter.write(shard.tensors, metadata: shard.metadata,
                                        to: "\(staging)/\(shard.fileName)", overwrite: false,
                                        observer: observer.map { o in { o(shard.fileName, $0) } })
            slots.append(weightmark_register_temporary("\(staging)/\(shard.fileName)"))
            for t in shard.tensors {
                weightMap.append(JSONMember(key: t.name, value: .string(shard.fileName)))
                totalSize += t.byteCount
            }
        }
        if let indexMetadata {
            var meta = indexMetadata.filter { $0.key != "total_size" }
            meta.insert(JSONMember(key: "total_size", value: .number(String(totalSize))), at: 0)
            weightMap.sort { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            let text = prettyIndex(metadata: meta, weightMap: weightMap)
            try AtomicFileWriter.write(Array(text.utf8), to: "\(staging)/\(SafetensorsModel.indexFileName)", overwrite: false)
            slots.append(weightmark_register_temporary("\(staging)/\(SafetensorsModel.indexFileName)"))
        }
        if let sourceFolder {
            for name in auxiliaryFiles {
                let target = "\(staging)/\(name)"
                let folder = (target as NSString).deletingLastPathComponent
                if folder != staging { try? fm.createDirectory(atPath: folder, withIntermediateDirectories: true) }
                try copyFile((sourceFolder as NSString).appendingPathComponent(name), to: target)
                slots.append(weightmark_register_temporary(target))
                if folder != staging { slots.append(weightmark_register_temporary(folder)) }
            }
        }
        if fm.fileExists(atPath: destination) {
            let old = "\(parent)/.\(base).old-\(UInt32.random(in: 0...UInt32.max))"
            do { try fm.moveItem(atPath: destination, toPath: old) } catch {
                throw TensorIOError.writeFailed(path: destination, reason: "cannot move the existing output aside: \(error.localizedDescription)")
            }
            do { try fm.moveItem(atPath: staging, toPath: destination) } catch {
                try? fm.moveItem(atPath: old, toPath: destination)
                throw TensorIOError.writeFailed(path: destination, reason: error.localizedDescription)
            }
            try? fm.removeItem(atPath: old)
        } else {
            do { try fm.moveItem(atPath: staging, toPath: destination) } catch {
                throw TensorIOError.writeFailed(path: destination, reason: error.localizedDescription)
            }
        }
        committed = true
        AtomicFileWriter.syncDirectory(parent)
        var written = shards.map { "\(destination)/\($0.fileName)" }
        if indexMetadata != nil { written.append("\(destination)/\(SafetensorsModel.indexFileName)") }
        if sourceFolder != nil { written += auxiliaryFiles.map { "\(destination)/\($0)" } }
        return written
    }

    /// Copies a file through a 4 MiB buffer into an atomic writer (never the whole file in memory).
    /// - Throws: `TensorIOError.cannotOpen` naming the source when it cannot be read: a file of the model
    ///   folder that silently went missing from the output would be worse than an error.
    static func copyFile(_ source: String, to destination: String) throws {
        let fd = open(source, O_RDONLY)
        guard fd >= 0 else {
            throw TensorIOError.cannotOpen(path: source, reason: "cannot read this file of the model folder (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        let writer = try AtomicFileWriter(destination: destination, overwrite: false)
        var buffer = [UInt8](repeating: 0, count: 4 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TensorIOError.cannotOpen(path: source, reason: "read failed (\(String(cString: strerror(errno))))")
            }
            if n == 0 { break }
            try buffer.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        try writer.commit()
    }

    /// The index in the Hub's style: two-space indentation, `metadata` then `weight_map`.
    static func prettyIndex(metadata: [JSONMember], weightMap: [JSONMember]) -> String {
        func block(_ members: [JSONMember]) -> String {
            members.map { "    " + JSONValue.string($0.key).serialized() + ": " + $0.value.serialized() }
                .joined(separator: ",\n")
        }
        return "{\n  \"metadata\": {\n\(block(metadata))\n  },\n  \"weight_map\": {\n\(block(weightMap))\n  }\n}\n"
    }
}

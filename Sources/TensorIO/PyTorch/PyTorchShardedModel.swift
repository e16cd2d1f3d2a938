import Foundation

/// A Hugging Face folder of PyTorch shards: `pytorch_model.bin.index.json` (the same `weight_map` as the
/// safetensors index) naming `pytorch_model-0000i-of-0000k.bin` checkpoints, seen as one model.
/// Sendable: immutable after init: the shards and the name index are only read.
public final class PyTorchShardedModel: RowBlockDecodable, StoredTensorSource, @unchecked Sendable {
    public static let indexFileName = "pytorch_model.bin.index.json"

    public let path: String
    public let shards: [PyTorchCheckpoint]
    public let shardNames: [String]
    private let owner: [String: Int]
    private let order: [(name: String, shard: Int)]

    public init(path: String) throws {
        self.path = path
        let indexPath = (path as NSString).appendingPathComponent(Self.indexFileName)
        let index = try SafetensorsModel.parseIndex(at: indexPath)
        shardNames = index.shardNames
        var opened: [PyTorchCheckpoint] = []
        for n in index.shardNames {
            let p = (path as NSString).appendingPathComponent(n)
            guard FileManager.default.fileExists(atPath: p) else {
                throw TensorIOError.invalidIndex(path: indexPath, reason: "shard \"\(n)\" named in weight_map does not exist")
            }
            opened.append(try PyTorchCheckpoint(path: p))
        }
        shards = opened
        var owner: [String: Int] = [:]
        var order: [(String, Int)] = []
        for (s, shard) in opened.enumerated() {
            for t in shard.tensors {
                let name = t.view.name
                guard index.weightMap[name] == index.shardNames[s] else {
                    throw TensorIOError.invalidIndex(path: indexPath, reason: index.weightMap[name] == nil
                        ? "tensor \"\(name)\" in \(index.shardNames[s]) is missing from weight_map"
                        : "weight_map puts \"\(name)\" in \(index.weightMap[name]!) but it is in \(index.shardNames[s])")
                }
                guard owner.updateValue(s, forKey: name) == nil else {
                    throw TensorIOError.invalidIndex(path: indexPath, reason: "tensor \"\(name)\" appears in two shards")
                }
                order.append((name, s))
            }
        }
        for (name, file) in index.weightMap where owner[name] == nil {
            throw TensorIOError.invalidIndex(path: indexPath, reason: "weight_map lists \"\(name)\" in \(file), but that shard has no such tensor")
        }
        self.owner = owner
        self.order = order
    }

    /// The shard file holding `name`.
    public func fileName(of name: String) -> String? { owner[name].map { shardNames[$0] } }

    private func shard(_ name: String) throws -> PyTorchCheckpoint {
        guard let s = owner[name] else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        return shards[s]
    }

    public var sourceTensors: [SourceTensor] { order.compactMap { shards[$0.shard].sourceTensor(named: $0.name) } }
    public func sourceTensor(named name: String) -> SourceTensor? { owner[name].flatMap { shards[$0].sourceTensor(named: name) } }
    public func decodeFloats(named name: String) throws -> [Float] { try shard(name).decodeFloats(named: name) }
    public func releaseTensor(named name: String) { if let s = owner[name] { shards[s].releaseTensor(named: name) } }

    public func decodeRows(named name: String, rows: Range<Int>, into out: UnsafeMutableBufferPointer<Float>) throws {
        try shard(name).decodeRows(named: name, rows: rows, into: out)
    }

    public func withStoredRows<R>(named name: String, rows: Range<Int>,
                                  _ body: (UnsafeRawBufferPointer, DType) throws -> R) throws -> R? {
        try shard(name).withStoredRows(named: name, rows: rows, body)
    }

    public func storedDType(named name: String) -> DType? { owner[name].flatMap { shards[$0].storedDType(named: name) } }
    public func rowMajorBytes(named name: String) throws -> [UInt8] { try shard(name).rowMajorBytes(named: name) }
}

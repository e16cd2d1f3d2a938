import Foundation

/// What `inspect` reports about a model: format, tensors, totals, metadata, optional statistics.
public struct ModelInspection: Sendable, Codable {
    public struct Tensor: Sendable, Codable {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public var parameters: Int
        public var bytes: Int
        public var file: String
        public var statistics: TensorStatistics?
    }

    public var path: String
    public var format: String
    public var layout: String
    public var files: [String]
    public var fileBytes: Int
    public var tensorCount: Int
    public var parameters: Int
    public var tensorBytes: Int
    public var parametersByDType: [String: Int]
    public var metadata: [String: String]
    public var tensors: [Tensor]

    /// Describes `model`; with `statistics`, decodes every float tensor once (one at a time, releasing
    /// its pages after use) and reports mean, rms, max |w| and the share of exact zeros.
    public init(_ model: SafetensorsModel, statistics: Bool, progress: ((Int) -> Void)? = nil) throws {
        path = model.path
        format = "safetensors"
        switch model.layout {
        case .file: layout = "single file"
        case .folder: layout = "folder"
        case .sharded: layout = "sharded folder (\(model.shards.count) shards)"
        }
        files = model.shardNames
        fileBytes = model.fileBytes
        tensorCount = model.tensors.count
        parameters = model.parameterCount
        tensorBytes = model.tensorBytes
        var byDType: [String: Int] = [:]
        for t in model.tensors { byDType[t.dtype.rawValue, default: 0] += t.descriptor.elementCount }
        parametersByDType = byDType
        var meta: [String: String] = [:]
        for s in model.shards { for (k, v) in s.metadata ?? [] { meta[k] = v } }
        metadata = meta
        var out: [Tensor] = []
        for (i, t) in model.tensors.enumerated() {
            var stats: TensorStatistics?
            if statistics && t.dtype.isSupportedFloat {
                stats = TensorStatistics(try model.floats(of: t))
                model.release(t)
            }
            out.append(Tensor(name: t.name, dtype: t.dtype.rawValue, shape: t.shape, parameters: t.descriptor.elementCount,
                              bytes: t.descriptor.byteCount, file: model.shardNames[t.shard], statistics: stats))
            progress?(i + 1)
        }
        tensors = out
    }
}

extension ModelInspection {
    /// Describes a model read through any tensor source other than safetensors and GGUF (PyTorch checkpoints,
    /// Meta consolidated folders, NumPy arrays). Without `statistics` only headers and pickles are read.
    public init(source: any TensorSource, statistics: Bool, progress: ((Int) -> Void)? = nil) throws {
        if let model = source as? SafetensorsModel {
            self = try ModelInspection(model, statistics: statistics, progress: progress)
            return
        }
        path = source.path
        metadata = [:]
        switch source {
        case let pt as PyTorchCheckpoint:
            format = "pytorch"
            layout = "torch.save zip checkpoint (record prefix \"\(pt.layout.prefix)\", \(pt.layout.pickleBytes)-byte pickle read by the restricted unpickler)"
            files = [(pt.path as NSString).lastPathComponent]
            fileBytes = pt.archive.mapping.size
        case let sharded as PyTorchShardedModel:
            format = "pytorch"
            layout = "sharded folder (\(sharded.shards.count) torch.save zip checkpoints, \(PyTorchShardedModel.indexFileName))"
            files = sharded.shardNames
            fileBytes = sharded.shards.reduce(0) { $0 + $1.archive.mapping.size }
        case let meta as MetaConsolidatedModel:
            format = "meta-consolidated"
            layout = "Meta layout, \(meta.shards.count) model-parallel shard\(meta.shards.count == 1 ? "" : "s") merged, Hugging Face names"
            files = meta.shards.map { ($0.path as NSString).lastPathComponent }
            fileBytes = meta.shards.reduce(0) { $0 + $1.archive.mapping.size }
            metadata = ["n_heads": String(meta.heads), "n_kv_heads": String(meta.kvHeads)]
        case let np as NumPyArrays:
            format = np.container == .npz ? "npz" : "npy"
            layout = np.container == .npz ? "NumPy archive (\(np.arrays.filter { $0.entry?.method == .deflated }.count) of \(np.arrays.count) members deflated)" : "single NumPy array"
            files = [(np.path as NSString).lastPathComponent]
            fileBytes = np.mapping.size
        case let q as QuantizedSafetensors:
            let base = try ModelInspection(q.base, statistics: false)
            format = "safetensors, quantized"
            layout = base.layout + "; read through the quantizer: " + q.quantizedSummary.sorted { $0.key < $1.key }.map { "\($0.value) × \($0.key)" }.joined(separator: ", ")
            files = base.files
            fileBytes = base.fileBytes
            metadata = base.metadata
        case let onnx as ONNXModel:
            format = "onnx"
            let external = onnx.externalDataFiles
            let quantized = Dictionary(grouping: onnx.sourceTensors.filter { $0.storage.hasPrefix("ONNX ") }, by: \.storage)
            layout = "ONNX ModelProto, \(onnx.initializerCount) initializers" + (external.isEmpty ? "" : ", external data in \(external.map { ($0 as NSString).lastPathComponent }.joined(separator: ", "))")
                + (quantized.isEmpty ? "" : "; " + quantized.sorted { $0.key < $1.key }.map { "\($0.value.count) × \($0.key)" }.joined(separator: ", "))
            files = [(onnx.path as NSString).lastPathComponent] + external.map { ($0 as NSString).lastPathComponent }
            fileBytes = onnx.mapping.size + external.reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0) }
        default:
            format = "\(type(of: source))"
            layout = ""
            files = [(source.path as NSString).lastPathComponent]
            fileBytes = 0
        }
        let all = source.sourceTensors
        var out: [Tensor] = []
        var byDType: [String: Int] = [:]
        for (i, t) in all.enumerated() {
            let count = t.shape.reduce(1, *)
            let width = DType(rawValue: t.storage).map { $0.bitCount / 8 } ?? 0
            byDType[t.storage, default: 0] += count
            var stats: TensorStatistics?
            if statistics && t.isFloating {
                stats = TensorStatistics(try source.decodeFloats(named: t.name))
                source.releaseTensor(named: t.name)
            }
            out.append(Tensor(name: t.name, dtype: t.storage, shape: t.shape, parameters: count, bytes: count * width,
                              file: files.count == 1 ? files[0] : (source as? PyTorchShardedModel)?.fileName(of: t.name) ?? "", statistics: stats))
            progress?(i + 1)
        }
        tensors = out
        tensorCount = out.count
        parameters = out.reduce(0) { $0 + $1.parameters }
        tensorBytes = out.reduce(0) { $0 + $1.bytes }
        parametersByDType = byDType
    }
}

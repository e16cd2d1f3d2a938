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

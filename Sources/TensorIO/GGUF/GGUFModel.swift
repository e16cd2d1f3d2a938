/// A GGUF file seen through Hugging Face names and layouts: names mapped back (BERT and Llama families),
/// shapes in row-major order, llama.cpp's rotary q/k row permutation undone, values dequantized on demand.
/// Sendable: immutable after init: the file (a read-only mapping) and the name map are only read.
public final class GGUFModel: TensorSource, @unchecked Sendable {
    public let file: GGUFFile
    public let architecture: GGUFArchitecture?
    public let heads: Int?
    public let kvHeads: Int?
    private let entries: [(hf: String, info: GGUFTensorInfo)]
    private let byName: [String: Int]

    public var path: String { file.path }

    public convenience init(path: String) throws {
        try self.init(file: GGUFFile(path: path))
    }

    /// Sees an opened GGUF file through Hugging Face names.
    /// - Throws: `TensorIOError.invalidGGUF` when two tensors map to one Hugging Face name.
    public init(file: GGUFFile) throws {
        self.file = file
        let arch = file.value("general.architecture")?.string.flatMap(GGUFArchitecture.init(rawValue:))
        architecture = arch
        let prefix = arch?.rawValue ?? ""
        heads = file.value("\(prefix).attention.head_count")?.integer
        kvHeads = file.value("\(prefix).attention.head_count_kv")?.integer ?? heads
        var list: [(hf: String, info: GGUFTensorInfo)] = []
        var index: [String: Int] = [:]
        for t in file.tensors {
            let hf = arch?.hfName(forGGUF: t.name) ?? t.name
            // One name must mean one tensor: otherwise its shape would come from one and its values from the other.
            if let first = index[hf] {
                throw TensorIOError.invalidGGUF(path: file.path, reason: .duplicateHuggingFaceName(hf, first: list[first].info.name, second: t.name))
            }
            index[hf] = list.count
            list.append((hf, t))
        }
        entries = list
        byName = index
    }

    public var sourceTensors: [SourceTensor] { entries.map { source($0.hf, $0.info) } }

    private func source(_ hf: String, _ t: GGUFTensorInfo) -> SourceTensor {
        SourceTensor(name: hf, shape: t.shape, storage: t.type.name, isFloating: GGMLBlockCodec.supportedForDecoding.contains(t.type))
    }

    public func sourceTensor(named name: String) -> SourceTensor? { byName[name].map { source(entries[$0].hf, entries[$0].info) } }

    public func ggufInfo(named name: String) -> GGUFTensorInfo? { byName[name].map { entries[$0].info } }

    public func decodeFloats(named name: String) throws -> [Float] {
        guard let i = byName[name] else { throw TensorIOError.tensorNotFound(name: name, path: path) }
        let t = entries[i].info
        let values = try file.floats(of: t)
        if let arch = architecture, t.shape.count == 2, !values.isEmpty,
           let h = arch.rotaryHeads(forHF: name, heads: heads ?? 0, kvHeads: kvHeads ?? 0), h > 0, h <= t.shape[0] / 2, t.shape[0] % (2 * h) == 0 {
            return restoreRows(values, cols: t.shape[1], order: GGUFArchitecture.rotaryRowOrder(rows: t.shape[0], heads: h))
        }
        return values
    }

    public func releaseTensor(named name: String) { if let i = byName[name] { file.release(entries[i].info) } }
}

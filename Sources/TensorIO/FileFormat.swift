import Foundation

/// What a model file or folder is, decided from its bytes (never from its extension).
public enum FileFormat: Sendable, Equatable {
    case safetensors
    case gguf
    /// A `torch.save` zip checkpoint (`<prefix>/data.pkl` inside).
    case pytorchZip
    /// A Hugging Face folder of PyTorch shards with `pytorch_model.bin.index.json`.
    case pytorchSharded
    /// A folder of Meta's `consolidated.NN.pth` shards with `params.json`.
    case metaConsolidated
    case npz
    case npy
    /// An ONNX ModelProto (`.onnx`), external data files beside it.
    case onnx
    /// Recognized, but not read: a one-line description and an optional hint.
    case unsupported(description: String, hint: String)

    /// A readable name ("PyTorch zip checkpoint", "NumPy .npz", …).
    public var name: String {
        switch self {
        case .safetensors: "safetensors"
        case .gguf: "GGUF"
        case .pytorchZip: "PyTorch zip checkpoint"
        case .pytorchSharded: "sharded PyTorch folder"
        case .metaConsolidated: "Meta consolidated.NN.pth folder"
        case .npz: "NumPy .npz archive"
        case .npy: "NumPy .npy array"
        case .onnx: "ONNX model"
        case let .unsupported(description, _): description
        }
    }

    /// Magic of the pre-1.6 PyTorch format: PROTO 2, then the magic number 0x1950a86a20f9469cfc6c as LONG1.
    static let legacyPyTorchMagic: [UInt8] = [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]
    static let hdf5Magic: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]

    /// Sniffs the format of `path`.
    /// - Throws: `TensorIOError.cannotOpen` when the path does not exist or cannot be read.
    public static func detect(path: String) throws -> FileFormat {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else {
            throw TensorIOError.cannotOpen(path: path, reason: "no such file or directory")
        }
        if isDir.boolValue { return detectFolder(path) }
        // A FIFO, socket or device would block or never end: refused before it is opened.
        var st = stat()
        if stat(path, &st) == 0, (st.st_mode & S_IFMT) != S_IFREG {
            let kind: String
            switch st.st_mode & S_IFMT {
            case S_IFIFO: kind = "a FIFO (named pipe)"
            case S_IFCHR: kind = "a character device"
            case S_IFBLK: kind = "a block device"
            case S_IFSOCK: kind = "a socket"
            default: kind = "not a regular file"
            }
            throw TensorIOError.cannotOpen(path: path, reason: "\(kind), not a model file: give the path of a regular file or folder")
        }
        guard let h = FileHandle(forReadingAtPath: path) else { throw TensorIOError.cannotOpen(path: path, reason: "unreadable") }
        let head = [UInt8](h.readData(ofLength: 64))
        try? h.close()
        let format = head.withUnsafeBytes { prefix in detect(prefix: prefix, path: path) }
        guard format == .pytorchZip else { return format }
        // A ZIP: which kind depends on its members (a broken directory is reported by the reader that opens it).
        guard let archive = try? ZipArchive(path: path) else { return .pytorchZip }
        return refineZip(archive.directory)
    }

    static func detectFolder(_ path: String) -> FileFormat {
        let fm = FileManager.default
        func has(_ name: String) -> Bool { fm.fileExists(atPath: (path as NSString).appendingPathComponent(name)) }
        if MetaConsolidatedModel.isMetaFolder(path) { return .metaConsolidated }
        if has("saved_model.pb") || has("saved_model.pbtxt") {
            return .unsupported(description: "a TensorFlow SavedModel folder", hint: "export the weights with safetensors, or convert to ONNX and then to PyTorch/safetensors")
        }
        let entries = (try? fm.contentsOfDirectory(atPath: path)) ?? []
        if !entries.contains(where: { $0.hasSuffix(".safetensors") }) {
            if has(PyTorchShardedModel.indexFileName) { return .pytorchSharded }
            if has("tf_model.h5") {
                return .unsupported(description: "a TensorFlow/Keras Hugging Face folder (tf_model.h5)", hint: "load it with transformers and save_pretrained(safe_serialization=True)")
            }
        }
        return .safetensors
    }

    /// `pytorch_model.bin` (or the only `.bin`/`.pt`/`.pth` file) of a folder without safetensors files, if any.
    static func singlePyTorchFile(inFolder path: String) -> String? {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue,
              let entries = try? FileManager.default.contentsOfDirectory(atPath: path),
              !entries.contains(where: { $0.hasSuffix(".safetensors") }) else { return nil }
        let candidates = entries.filter { $0.hasSuffix(".bin") || $0.hasSuffix(".pt") || $0.hasSuffix(".pth") }
        if candidates.contains("pytorch_model.bin") { return (path as NSString).appendingPathComponent("pytorch_model.bin") }
        return candidates.count == 1 ? (path as NSString).appendingPathComponent(candidates[0]) : nil
    }

    /// Sniffs from the first bytes of a file (at least 64 when the file is that long).
    public static func detect(prefix: UnsafeRawBufferPointer, path: String = "") -> FileFormat {
        let b = Array(prefix)
        func starts(_ magic: [UInt8]) -> Bool { b.count >= magic.count && Array(b[0..<magic.count]) == magic }
        // A plausible safetensors header (length within the reference limit, JSON object next) wins over the byte
        // patterns below, which a header length can happen to spell (e.g. 640 = 0x80 0x02, a pickle's first bytes).
        if b.count >= 9, b[8] == UInt8(ascii: "{"),
           prefix.loadUnaligned(as: UInt64.self).littleEndian <= SafetensorsHeader.maximumHeaderLength { return .safetensors }
        if starts(Array("GGUF".utf8)) { return .gguf }
        if ZipDirectory.looksLikeZip(prefix) { return .pytorchZip } // refined by `detect(path:)` once the directory is read
        if NPYHeader.looksLikeNPY(prefix) { return .npy }
        if starts(legacyPyTorchMagic) {
            return .unsupported(description: "a legacy PyTorch checkpoint (the pre-1.6 pickle format, not a zip)",
                                hint: "re-save it with torch ≥ 1.6: torch.save(torch.load(f, weights_only=True), out), or as safetensors")
        }
        if starts(hdf5Magic) {
            return .unsupported(description: "an HDF5 file (Keras .h5 / TensorFlow weights)", hint: "convert it to safetensors")
        }
        if b.count >= 8, Array(b[4..<8]) == Array("TFL3".utf8) {
            return .unsupported(description: "a TensorFlow Lite flatbuffer", hint: "")
        }
        // PROTO 2–5, then an opcode a pickled object starts with: FRAME (protocol 4+), EMPTY_DICT/LIST/TUPLE, MARK,
        // GLOBAL (an OrderedDict state dict), a string or a small int. Two bytes alone match 1 random file in 16,384.
        if b.count >= 3, b[0] == 0x80, (2...5).contains(b[1]),
           [0x95, 0x7D, 0x5D, 0x29, 0x28, 0x63, 0x8C, 0x58, 0x4B, 0x4A, 0x4D, 0x4E, 0x88, 0x89].contains(b[2]) {
            return .unsupported(description: "a bare Python pickle, not a torch.save zip checkpoint", hint: "re-save the state dict with torch.save or as safetensors")
        }
        // ONNX ModelProto: field 1 (ir_version, varint) first, then producer_name / graph / opset fields.
        if b.count >= 3, b[0] == 0x08, b[1] > 0, b[1] < 0x20, [0x12, 0x1A, 0x22, 0x2A, 0x3A, 0x42, 0x52].contains(b[2]) {
            return .onnx
        }
        return .safetensors
    }

    /// Refines a ZIP: a torch.save checkpoint holds `<prefix>/data.pkl`; a NumPy .npz holds only `.npy` members;
    /// a Keras 3 `.keras` file holds `config.json` and `model.weights.h5`.
    static func refineZip(_ directory: ZipDirectory) -> FileFormat {
        let names = directory.entries.map(\.name)
        if names.contains(where: { $0.hasSuffix("/data.pkl") }) { return .pytorchZip }
        if !names.isEmpty, names.allSatisfy({ $0.hasSuffix(".npy") }) { return .npz }
        if names.contains("model.weights.h5") || names.contains("config.json") && names.contains("metadata.json") {
            return .unsupported(description: "a Keras 3 .keras archive", hint: "save the weights with safetensors")
        }
        return .unsupported(description: "a ZIP archive that is neither a torch.save checkpoint nor a NumPy .npz", hint: "")
    }
}

/// Opens a model for reading, in whatever supported format its bytes show: safetensors (file or Hugging Face
/// folder), GGUF, a PyTorch zip checkpoint (or a Hugging Face folder of them with `pytorch_model.bin.index.json`),
/// a Meta `consolidated.NN.pth` folder, NumPy `.npz` or `.npy`.
/// - Throws: `TensorIOError.unsupportedFormat` with a one-line description for recognized formats WeightMark does
///   not read; the format's own error otherwise.
public func openTensorSource(path: String) throws -> any TensorSource {
    switch try FileFormat.detect(path: path) {
    case .gguf: return try GGUFModel(path: path)
    case .pytorchZip: return try PyTorchCheckpoint(path: path)
    case .npy: return try NumPyArrays(path: path)
    case .metaConsolidated: return try MetaConsolidatedModel(path: path)
    case .pytorchSharded: return try PyTorchShardedModel(path: path)
    case .npz: return try NumPyArrays(path: path)
    case .onnx: return try ONNXModel(path: path)
    case .safetensors:
        // A Hugging Face folder holding only pytorch_model.bin (no safetensors): read that checkpoint.
        if let single = FileFormat.singlePyTorchFile(inFolder: path) { return try openTensorSource(path: single) }
        let model = try SafetensorsModel(path: path)
        // Weights stored by a hub quantizer (MLX, bitsandbytes, FP8) are read as the matrices they stand for.
        return try QuantizedSafetensors.wrapIfQuantized(model) ?? model
    case let .unsupported(description, hint):
        if description.hasPrefix("a bare Python pickle") { try PickleScan.refuseIfUnsafe(path: path) }
        throw TensorIOError.unsupportedFormat(path: path, format: description, hint: hint)
    }
}

import Foundation

/// A file-level failure of TensorIO: what went wrong, in which file, and what to do about it.
public enum TensorIOError: Error, Sendable, CustomStringConvertible {
    case invalidSafetensors(path: String, reason: SafetensorsFormatError)
    case cannotOpen(path: String, reason: String)
    case notAModel(path: String, reason: String)
    case invalidIndex(path: String, reason: String)
    case tensorNotFound(name: String, path: String)
    case unsupportedDType(tensor: String, dtype: DType)
    case outputExists(path: String)
    case writeFailed(path: String, reason: String)
    case invalidTensor(name: String, reason: String)
    case invalidGGUF(path: String, reason: GGUFFormatError)
    case unsupportedGGMLType(tensor: String, type: String, path: String)
    /// A tensor type id newer than this version knows: the file is most likely valid.
    case unknownGGMLType(tensor: String, id: UInt32, path: String)
    case invalidZip(path: String, reason: ZipFormatError)
    case invalidPickle(path: String, entry: String, reason: PickleError)
    case invalidPyTorch(path: String, reason: String)
    case invalidNumPy(path: String, reason: String)
    case invalidMetaCheckpoint(path: String, reason: String)
    case unsupportedFormat(path: String, format: String, hint: String)
    case notSafetensors(path: String, format: FileFormat)
    /// A JSON object repeats a key (readers disagree on which value counts).
    case duplicateJSONKey(path: String, key: String, offset: Int)
    /// The file shrank (or was replaced) while it was mapped and read: what was read is not the file.
    case fileChanged(path: String)
    /// An ONNX file whose protobuf or graph is malformed.
    case invalidONNX(path: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidONNX(path, reason):
            return "\(path): not a readable ONNX model: \(reason). If onnx.checker accepts it, please report it; otherwise re-export it (torch.onnx.export, optimum-cli export onnx)."
        case let .fileChanged(path):
            return "\(path): the file changed while it was read (it shrank under the mapping; a mirror re-synced in place?). Nothing read from it is used; run again once it is stable."
        case let .duplicateJSONKey(path, key, offset):
            return "\(path): the key \"\(key)\" appears twice in one JSON object (byte \(offset)); JSON readers disagree on which value counts, so the file is refused. Write it again with the tool that made it."
        case let .invalidSafetensors(path, reason):
            return "\(path): not a valid safetensors file: \(reason). Re-export or re-download the file; WeightMark rejects what the reference safetensors reader rejects."
        case let .cannotOpen(path, reason):
            return "\(path): cannot open: \(reason). Check the path and its permissions."
        case let .notAModel(path, reason):
            return "\(path): not a model: \(reason). Pass a .safetensors file or a Hugging Face folder with model.safetensors or model.safetensors.index.json."
        case let .invalidIndex(path, reason):
            return "\(path): invalid shard index: \(reason). Fix or regenerate model.safetensors.index.json."
        case let .tensorNotFound(name, path):
            return "\(path): no tensor named \"\(name)\"."
        case let .unsupportedDType(tensor, dtype):
            return "tensor \"\(tensor)\": dtype \(dtype.rawValue) cannot be decoded to float (supported: F32, F16, BF16, F64)."
        case let .outputExists(path):
            return "\(path) already exists; choose another output path or pass --force to replace it."
        case let .writeFailed(path, reason):
            return "\(path): write failed: \(reason). Nothing was left at the destination; check free space and permissions."
        case let .invalidTensor(name, reason):
            return "tensor \"\(name)\": \(reason)"
        case let .invalidGGUF(path, reason):
            return "\(path): not a valid GGUF file: \(reason). Re-download or re-convert the file."
        case let .unsupportedGGMLType(tensor, type, path):
            return "\(path): tensor \"\(tensor)\" is stored as \(type), which WeightMark cannot dequantize (it decodes \(GGMLBlockCodec.supportedForDecoding.map(\.name).sorted().joined(separator: ", ")))."
        case let .unknownGGMLType(tensor, id, path):
            let known = GGMLType.allCases.map(\.rawValue).max() ?? 0
            return "\(path): tensor \"\(tensor)\" uses ggml type id \(id), which this version of WeightMark does not know (it reads ids up to \(known)); the file is probably valid but newer than WeightMark. Update WeightMark, or re-quantize the file with a type it reads."
        case let .invalidZip(path, reason):
            return "\(path): not a valid ZIP archive: \(reason). Re-download the file or re-save it (torch.save / numpy.savez)."
        case let .invalidPickle(path, entry, reason):
            if case let .unsafeGlobal(module, name, _) = reason, module == "torch",
               ["qint8", "quint8", "qint32", "quint4x2", "QInt8Storage", "QUInt8Storage", "QInt32Storage", "per_tensor_affine", "per_channel_affine"].contains(name) {
                // Quantized tensors are data, not code: say what the file is and how to get it read.
                return "\(path): a PyTorch quantized state dict (torch.ao.quantization.quantize_dynamic or static: packed int8 Linear weights, torch.\(name)); WeightMark does not read PyTorch's quantized tensors. Check the float model it was made from, or export the quantized model to ONNX (torch.onnx.export, or onnxruntime's quantize_dynamic on the float export), which WeightMark reads. Nothing was executed."
            }
            if case .unsafeGlobal = reason {
                return "\(path): \(entry): \(reason). Nothing was executed. Do not torch.load this file without weights_only=True; WeightMark reads only plain state dicts."
            }
            return "\(path): \(entry): \(reason). WeightMark reads plain state dicts saved by torch.save; re-save with torch.save(model.state_dict(), path) or as safetensors."
        case let .invalidPyTorch(path, reason):
            return "\(path): not a readable PyTorch checkpoint: \(reason). Re-save it with torch.save(model.state_dict(), path) or as safetensors."
        case let .invalidNumPy(path, reason):
            return "\(path): not a readable NumPy file: \(reason). Re-save it with numpy.save / numpy.savez."
        case let .invalidMetaCheckpoint(path, reason):
            return "\(path): not a readable Meta-layout checkpoint: \(reason). The folder needs params.json and consolidated.00.pth … consolidated.NN.pth."
        case let .notSafetensors(path, format):
            if case let .unsupported(description, hint) = format {
                return TensorIOError.unsupportedFormat(path: path, format: description, hint: hint).description
            }
            return "\(path): a \(format.name), not safetensors; this command needs a safetensors model. inspect, detect, attack and bench read this format directly."
        case let .unsupportedFormat(path, format, hint):
            return "\(path): \(format), which WeightMark does not read\(hint.isEmpty ? "" : " (\(hint))"). WeightMark reads safetensors files and Hugging Face folders, GGUF, PyTorch zip checkpoints (.bin/.pt/.pth, Meta consolidated.NN.pth folders) and NumPy .npy/.npz."
        }
    }
}

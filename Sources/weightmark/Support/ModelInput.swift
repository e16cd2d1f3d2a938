import Foundation
import TensorIO

/// A model opened for a command that rewrites safetensors (`attack`, `bench`): safetensors input is used as is;
/// any other format WeightMark reads (PyTorch checkpoint, Meta folder, NumPy, GGUF) is first copied to a temporary
/// safetensors file with the same names, shapes and element types (GGUF: floats as F32), removed when this goes away.
final class RewritableModel {
    let model: SafetensorsModel
    private let temporaryFolder: String?

    init(path: String, quiet: Bool) throws {
        if case .safetensors = try FileFormat.detect(path: path) {
            model = try SafetensorsModel(path: path)
            temporaryFolder = nil
            return
        }
        let source = try openTensorSource(path: path)
        let folder = NSTemporaryDirectory() + "weightmark-input-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        temporaryFolder = folder
        let copy = folder + "/" + ((path as NSString).lastPathComponent as NSString).deletingPathExtension + ".safetensors"
        let start = Date()
        do {
            let dropped = try SafetensorsExport.write(source, to: copy, overwrite: false)
            model = try SafetensorsModel(path: copy)
            Console.note("read \(path) (\(try FileFormat.detect(path: path).name)) into a temporary safetensors copy in \(String(format: "%.1f", Date().timeIntervalSince(start))) s\(dropped.isEmpty ? "" : "; left out \(dropped.count) non-float tensors")", quiet: quiet)
        } catch {
            try? FileManager.default.removeItem(atPath: folder)
            throw error
        }
    }

    deinit {
        if let temporaryFolder { try? FileManager.default.removeItem(atPath: temporaryFolder) }
    }
}

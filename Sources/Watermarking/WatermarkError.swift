import Foundation
import TensorIO

/// Failures of the watermarking layer, each naming the file or tensor and the fix.
public enum WatermarkError: Error, CustomStringConvertible, Sendable {
    case invalidKey(path: String, reason: String)
    case nothingSelected(path: String, reason: String)
    case invalidReport(path: String, reason: String)
    case incompatibleReports(reason: String)
    case shapeMismatch(tensor: String, reason: String)
    case unmarkableTensor(path: String, tensor: String, reason: String)
    case unmarkedWeightFiles(path: String, files: [String])
    case invalidManifest(path: String, reason: String)

    public var description: String {
        switch self {
        case let .invalidKey(path, reason): "\(path): invalid key: \(reason)."
        case let .nothingSelected(path, reason): "\(path): no tensor selected for watermarking: \(reason)."
        case let .invalidReport(path, reason): "\(path): not a WeightMark detection report: \(reason)."
        case let .incompatibleReports(reason): "cannot combine reports: \(reason)."
        case let .shapeMismatch(tensor, reason): "tensor \"\(tensor)\": \(reason)."
        case let .unmarkableTensor(path, tensor, reason):
            "\(path): tensor \"\(tensor)\" cannot carry the mark: \(reason). Repair the model, or leave the tensor out with --exclude '\(tensor)'."
        case let .invalidManifest(path, reason):
            "\(path): not a usable WeightMark embed manifest (the .weightmark.json `embed` writes): \(reason)."
        case let .unmarkedWeightFiles(path, files):
            "\(path): the folder also holds weights WeightMark does not mark (\(files.joined(separator: ", "))); copied as they are, they would ship unmarked and a leak of them could not be traced. Remove them from the input folder, or pass --drop-unmarked-weights to leave them out of the output."
        }
    }
}

// Example: open a model with TensorIO and print its largest float tensors with their rms.
// Run: swift run InspectModel path/to/model.safetensors
import Foundation
import TensorIO

guard CommandLine.arguments.count == 2 else {
    FileHandle.standardError.write(Data("usage: InspectModel MODEL\n".utf8))
    exit(2)
}
do {
    let model = try SafetensorsModel(path: CommandLine.arguments[1])
    let largest = model.tensors.filter { $0.dtype.isSupportedFloat }
        .sorted { $0.descriptor.elementCount > $1.descriptor.elementCount }.prefix(5)
    for t in largest {
        let stats = TensorStatistics(try model.floats(of: t))
        print("\(t.name) \(t.shape) rms=\(stats.rms)")
    }
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(2)
}

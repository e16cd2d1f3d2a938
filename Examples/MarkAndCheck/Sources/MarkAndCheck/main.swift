// Marks a model in-process, then checks the marked copy and the original, through WeightMark's libraries.
// Run: swift run MarkAndCheck ORIGINAL MARKED-OUT
import Foundation
import TensorIO
import Watermarking

let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    FileHandle.standardError.write(Data("usage: MarkAndCheck ORIGINAL MARKED-OUT\n".utf8))
    exit(2)
}
do {
    // A fresh secret key; `weightmark keygen` writes the same kind of key to a file (WatermarkKey.save/load).
    let key = WatermarkKey.generate()

    // Embed with the defaults of `weightmark embed --no-release`: format v2, blind Z 20 expected.
    let original = try SafetensorsModel(path: arguments[1])
    let options = EmbedOptions()
    let plan = try Embedder.plan(original, options: options)
    let manifest = try Embedder.embed(original, key: key, options: options, plan: plan, to: arguments[2], overwrite: false)
    print("marked \(manifest.tensors.count) tensors")

    // Detect blind in the marked copy and in the original (any format TensorIO reads would do as the suspect).
    for path in [arguments[2], arguments[1]] {
        let report = try Detector.detect(suspect: openTensorSource(path: path), reference: nil, key: key, options: DetectOptions())
        print("\(path): \(report.detected ? "detected" : "not detected") Z \(String(format: "%.2f", report.combinedZ)) log10 bound \(String(format: "%.1f", report.log10PValueBound))")
    }
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(2)
}

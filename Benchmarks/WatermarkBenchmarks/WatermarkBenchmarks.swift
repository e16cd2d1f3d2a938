import Benchmark
import Foundation
import LinearAlgebra
import TensorIO
import Watermarking

// Run: make bench, or cd Benchmarks && swift package benchmark --target WatermarkBenchmarks
// Per Llama-7B tensor shape: carrier generation (keyed Gaussians + QR); detection and embedding of one bf16
// tensor in memory (decode + projection; pattern + update + bf16 encode, with OpenBLAS); and the same two
// through a safetensors file as the CLI runs them (rows read in place from the warm mapping, carriers
// included; embed writes the marked file and hashes it for the manifest). Throughput = tensors/s.
// Inputs are built once per benchmark in its setup hook, not per sample.

private let shapes: [(String, Int, Int)] = [("4096x4096", 4096, 4096), ("11008x4096", 11008, 4096), ("32000x4096", 32000, 4096)]
private let secret = (0..<32).map { UInt8($0) }
private let key = WatermarkKey(secret: secret)

private func bf16Tensor(rows: Int, cols: Int) -> [UInt8] {
    var state: UInt64 = 0x1234_5678
    let values = (0..<(rows * cols)).map { _ -> Float in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: state) >> 40) * 1e-9
    }
    return FloatConversion.encode(values, as: .bf16)
}

/// What a benchmark's setup hook builds and its samples use.
private final class Fixture<T>: @unchecked Sendable {
    var value: T?
}

/// A one-tensor bf16 safetensors file in a fresh temporary folder, read once so the page cache is warm (it
/// was written with direct I/O, which bypasses the cache).
private func fileModel(rows: Int, cols: Int, label: String) throws -> (dir: String, model: SafetensorsModel) {
    let dir = NSTemporaryDirectory() + "weightmark-bench-\(getpid())-\(label)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let path = dir + "/model.safetensors"
    try SafetensorsWriter.write([OutputTensor(name: "model.layers.0.mlp.up_proj.weight", dtype: .bf16, shape: [rows, cols],
                                              bytes: bf16Tensor(rows: rows, cols: cols))],
                                metadata: nil, to: path, overwrite: true)
    let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
    while let chunk = try handle.read(upToCount: 64 << 20), !chunk.isEmpty {}
    try handle.close()
    return (dir, try SafetensorsModel(path: path))
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .cpuTotal, .throughput, .peakMemoryResident],
                                           maxDuration: .seconds(5), maxIterations: 20)
    for (label, m, n) in shapes {
        Benchmark("carriers \(label)") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try Carriers.derive(secret: secret, tensor: "model.layers.0.mlp.up_proj.weight", rows: m, cols: n))
            }
        }

        let tensor = Fixture<(bytes: [UInt8], carriers: Carriers)>()
        let makeTensor: Benchmark.BenchmarkSetupHook = {
            tensor.value = (bf16Tensor(rows: m, cols: n), try Carriers.derive(secret: secret, tensor: "w", rows: m, cols: n))
        }
        let dropTensor: Benchmark.BenchmarkTeardownHook = { tensor.value = nil }
        Benchmark("detect one bf16 tensor \(label)", closure: { benchmark in
            let (bytes, carriers) = tensor.value!
            for _ in benchmark.scaledIterations {
                let x = bytes.withUnsafeBytes { FloatConversion.decode($0, dtype: .bf16) }
                blackHole(try Detector.score(name: "w", suspect: x, reference: nil, rows: m, cols: n, carriers: carriers).z)
            }
        }, setup: makeTensor, teardown: dropTensor)
        Benchmark("embed one bf16 tensor \(label)", closure: { benchmark in
            let (bytes, carriers) = tensor.value!
            for _ in benchmark.scaledIterations {
                var w = Matrix(rows: m, cols: n, storage: bytes.withUnsafeBytes { FloatConversion.decode($0, dtype: .bf16) })
                try Embedder.mark(&w, carriers: carriers, shaping: .uniform, delta: 1e-3)
                blackHole(FloatConversion.encode(w.storage, as: .bf16).count)
            }
        }, setup: makeTensor, teardown: dropTensor)

        let file = Fixture<(dir: String, model: SafetensorsModel)>()
        let makeFile: Benchmark.BenchmarkSetupHook = { file.value = try fileModel(rows: m, cols: n, label: label) }
        let dropFile: Benchmark.BenchmarkTeardownHook = {
            if let dir = file.value?.dir { try? FileManager.default.removeItem(atPath: dir) }
            file.value = nil
        }
        Benchmark("detect one bf16 tensor from a file \(label)", closure: { benchmark in
            let model = file.value!.model
            for _ in benchmark.scaledIterations {
                blackHole(try Detector.detect(suspect: model, reference: nil, key: key, options: DetectOptions()).combinedZ)
            }
        }, setup: makeFile, teardown: dropFile)
        Benchmark("embed one bf16 tensor into a file \(label)", closure: { benchmark in
            let (dir, model) = file.value!
            var options = EmbedOptions()
            options.strength = .relativeDistortion(1e-3)
            let plan = try Embedder.plan(model, options: options)
            for _ in benchmark.scaledIterations {
                blackHole(try Embedder.embed(model, key: key, options: options, plan: plan, to: dir + "/marked.safetensors", overwrite: true))
            }
        }, setup: makeFile, teardown: dropFile)
    }
}

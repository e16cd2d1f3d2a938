import Benchmark
import Foundation
import LinearAlgebra
import TensorIO
import Watermarking

// Run: swift package benchmark --target WatermarkBenchmarks
// Per Llama-7B tensor shape: carrier generation (keyed Gaussians + QR), blind detection of one bf16 tensor
// (decode + projection), and embedding into it (pattern + update + bf16 encode). Throughput = tensors/s.

private let shapes: [(String, Int, Int)] = [("4096x4096", 4096, 4096), ("11008x4096", 11008, 4096), ("32000x4096", 32000, 4096)]
private let secret = (0..<32).map { UInt8($0) }

private func bf16Tensor(rows: Int, cols: Int) -> [UInt8] {
    var state: UInt64 = 0x1234_5678
    let values = (0..<(rows * cols)).map { _ -> Float in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: state) >> 40) * 1e-9
    }
    return FloatConversion.encode(values, as: .bf16)
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .throughput, .peakMemoryResident],
                                           maxDuration: .seconds(5), maxIterations: 20)
    for (label, m, n) in shapes {
        Benchmark("carriers \(label)") { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try Carriers.derive(secret: secret, tensor: "model.layers.0.mlp.up_proj.weight", rows: m, cols: n))
            }
        }
        Benchmark("detect one bf16 tensor \(label)") { benchmark in
            let bytes = bf16Tensor(rows: m, cols: n)
            let carriers = try Carriers.derive(secret: secret, tensor: "w", rows: m, cols: n)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                let x = bytes.withUnsafeBytes { FloatConversion.decode($0, dtype: .bf16) }
                blackHole(Detector.evidence(name: "w", suspect: x, reference: nil, rows: m, cols: n, carriers: carriers).z)
            }
        }
        Benchmark("embed one bf16 tensor \(label)") { benchmark in
            let bytes = bf16Tensor(rows: m, cols: n)
            let carriers = try Carriers.derive(secret: secret, tensor: "w", rows: m, cols: n)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                var w = Matrix(rows: m, cols: n, storage: bytes.withUnsafeBytes { FloatConversion.decode($0, dtype: .bf16) })
                Embedder.mark(&w, carriers: carriers, shaping: .uniform, delta: 1e-3)
                blackHole(FloatConversion.encode(w.storage, as: .bf16).count)
            }
        }
    }
}

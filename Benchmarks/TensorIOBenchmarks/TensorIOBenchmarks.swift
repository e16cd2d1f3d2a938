import Benchmark
import Foundation
import TensorIO

// Run: make bench, or cd Benchmarks && swift package benchmark --target TensorIOBenchmarks
// Each decode/encode iteration handles 1 Mi elements, so elements/s = throughput × 1,048,576.

private let elementCount = 1 << 20

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .throughput, .peakMemoryResident],
                                           maxDuration: .seconds(3), maxIterations: 10_000)

    for dtype in [DType.bf16, .f16] {
        Benchmark("\(dtype == .bf16 ? "bf16" : "f16") → f32 decode (1 Mi elements, 1 core)") { benchmark in
            let bytes = FloatConversion.encode((0..<elementCount).map { Float($0 % 977) * 1e-3 - 0.4 }, as: dtype)
            var out = [Float](repeating: 0, count: elementCount)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                bytes.withUnsafeBytes { b in out.withUnsafeMutableBufferPointer { FloatConversion.decode(b, dtype: dtype, into: $0) } }
                blackHole(out[elementCount / 2])
            }
        }
    }

    Benchmark("f32 → bf16 encode (1 Mi elements, 1 core)") { benchmark in
        let values = (0..<elementCount).map { Float($0 % 977) * 1e-3 - 0.4 }
        var out = [UInt8](repeating: 0, count: 2 * elementCount)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            values.withUnsafeBufferPointer { v in out.withUnsafeMutableBytes { FloatConversion.encode(v, as: .bf16, into: $0) } }
            blackHole(out[elementCount])
        }
    }

    Benchmark("open + validate a 5,000-tensor safetensors file") { benchmark in
        let path = NSTemporaryDirectory() + "weightmark-bench-5000-\(getpid()).safetensors"
        let tensors = (0..<5000).map { i in
            OutputTensor(name: "model.layers.\(i / 10).block.\(i % 10).weight", dtype: .bf16, shape: [4, 8],
                         bytes: [UInt8](repeating: UInt8(i & 0xFF), count: 64))
        }
        try SafetensorsWriter.write(tensors, metadata: [("format", "pt")], to: path, overwrite: true)
        defer { unlink(path) }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try SafetensorsFile(path: path).tensors.count)
        }
    }
}

// swift-tools-version: 6.1
import PackageDescription

// The package-benchmark suites (`make bench`), in a package of their own so that WeightMark itself — and every package
// that depends on it — neither fetches package-benchmark nor builds its plugin tools: a fresh `make demo` starts
// compiling WeightMark at once. They use WeightMark's public library products only.
let package = Package(
    name: "WeightMarkBenchmarks",
    dependencies: [
        .package(name: "WeightMark", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "TensorIOBenchmarks",
            dependencies: [.product(name: "TensorIO", package: "WeightMark"), .product(name: "Benchmark", package: "benchmark")],
            path: "TensorIOBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "WatermarkBenchmarks",
            dependencies: [
                .product(name: "TensorIO", package: "WeightMark"), .product(name: "LinearAlgebra", package: "WeightMark"),
                .product(name: "Watermarking", package: "WeightMark"), .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "WatermarkBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)

// swift-tools-version: 6.1
import PackageDescription

// No unsafe flags anywhere: another package can depend on these libraries by version. `make test` runs the suite
// optimized (`swift test -c release`, testable imports on): a debug build runs the embed/detect paths (keyed
// generator, codecs, per-element loops) ~40× slower, which would make the real-model tests take an hour.

// Linux only: the I/O layer calls Glibc directly (O_DIRECT writes, posix_fadvise, sync_file_range) and links
// Debian's BLAS/LAPACK. No Apple platform is declared, because none is built or tested.
let package = Package(
    name: "WeightMark",
    products: [
        .executable(name: "weightmark", targets: ["weightmark"]),
        .library(name: "TensorIO", targets: ["TensorIO"]),
        .library(name: "Conversion", targets: ["Conversion"]),
        .library(name: "LinearAlgebra", targets: ["LinearAlgebra"]),
        .library(name: "Watermarking", targets: ["Watermarking"]),
        .library(name: "Attacks", targets: ["Attacks"]),
        .library(name: "Robustness", targets: ["Robustness"]),
        .library(name: "Alignment", targets: ["Alignment"]),
        .library(name: "Evidence", targets: ["Evidence"]),
        .library(name: "Verification", targets: ["Verification"]),
        .library(name: "Lineage", targets: ["Lineage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
    ],
    targets: [
        // System libraries: Debian's libblas-dev / liblapack-dev / liblapacke-dev. With libopenblas-dev
        // installed, update-alternatives points libblas.so.3 and liblapack.so.3 at OpenBLAS.
        .systemLibrary(name: "CBLAS", pkgConfig: "blas",
                       providers: [.apt(["libblas-dev", "libopenblas-dev"])]),
        .systemLibrary(name: "CLAPACKE", pkgConfig: "lapacke",
                       providers: [.apt(["liblapack-dev", "liblapacke-dev"])]),

        // zlib inflates deflated .npz members (Foundation on Linux has no zlib API). Debian: zlib1g-dev.
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        .target(name: "TensorIO", dependencies: ["CTensorIOKernels", "CZlib"]),
        // Writing other formats: the GGUF writer, ggml's quantizers and llama.cpp's conversion policy. Reading needs none
        // of it (TensorIO keeps the readers and the dequantizers).
        .target(name: "Conversion", dependencies: ["TensorIO"]),
        .target(name: "LinearAlgebra", dependencies: ["CBLAS", "CLAPACKE"]),
        // Hot loops in C (keystream, Gaussian carriers, rank-32 projection, stochastic rounding), compiled for
        // AVX-512, AVX2 and baseline and dispatched at run time: Swift's generic SIMD does not reach these units.
        // Format-side C: Linux I/O calls and bf16 numerics (no key anywhere), so TensorIO builds without watermark code.
        .target(name: "CTensorIOKernels"),
        .target(name: "CKernels", dependencies: ["CTensorIOKernels"]),
        .target(name: "Watermarking", dependencies: [
            "TensorIO", "LinearAlgebra", "CKernels", "CTensorIOKernels",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "Attacks", dependencies: ["TensorIO", "Conversion", "LinearAlgebra"]),
        .target(name: "Synthesis", dependencies: ["TensorIO"]),
        // `weightmark scan`: walking trees, grouping files into models, triage and sharded JSON-lines output.
        .target(name: "Scanning", dependencies: [
            "TensorIO", "CTensorIOKernels", "Watermarking", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // Key-free alignment of a suspect to the reference (permutations, rescalings, rotations), and the BERT forward
        // pass that measures how much of a model's function an attack kept; neither ever sees a key.
        .target(name: "Alignment", dependencies: ["TensorIO", "LinearAlgebra"]),
        .target(name: "Inference", dependencies: ["TensorIO", "LinearAlgebra"]),
        // The passive lineage test (no mark, no key): does a suspect's feed-forward structure come from the reference's?
        .target(name: "Lineage", dependencies: ["TensorIO", "LinearAlgebra", "Alignment"]),
        .target(name: "Robustness", dependencies: ["TensorIO", "LinearAlgebra", "Watermarking", "Attacks", "Alignment", "Inference", "Verification", "Evidence"]),
        // Release commitments, RFC 3161 timestamps and evidence bundles (DER/CMS parsed with swift-asn1, certificates
        // and signatures checked with swift-certificates).
        .target(name: "Evidence", dependencies: [
            "TensorIO", "Watermarking",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "SwiftASN1", package: "swift-asn1"),
            .product(name: "X509", package: "swift-certificates"),
        ]),
        // The one verification path (keys → read → align → pair → score → bound) that detect, evidence, trace, scan and
        // bench call; key resolution and the owner's key store live in Evidence, next to release keys and openings.
        .target(name: "Verification", dependencies: ["TensorIO", "Watermarking", "Alignment", "Evidence"]),
        .executableTarget(name: "weightmark", dependencies: [
            "TensorIO", "CTensorIOKernels", "Conversion", "LinearAlgebra", "Watermarking", "Attacks", "Robustness", "Synthesis", "Scanning", "Evidence", "Alignment", "Inference", "Verification", "Lineage",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .target(name: "WeightMarkTestSupport", dependencies: ["TensorIO"]),

        .testTarget(name: "TensorIOTests", dependencies: [
            "TensorIO", "WeightMarkTestSupport", .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .testTarget(name: "LinearAlgebraTests", dependencies: ["LinearAlgebra"]),
        // The package as a whole: another package builds against it by version; the architecture doc matches it.
        .testTarget(name: "PackageTests", dependencies: ["Watermarking", "WeightMarkTestSupport"]),
        .testTarget(name: "VerificationTests", dependencies: ["Verification", "Evidence", "Watermarking", "TensorIO", "LinearAlgebra", "WeightMarkTestSupport"]),
        .testTarget(name: "AlignmentTests", dependencies: ["Alignment", "Inference", "Robustness", "Attacks", "Watermarking", "Synthesis", "TensorIO", "LinearAlgebra", "WeightMarkTestSupport"]),
        .testTarget(name: "InferenceTests", dependencies: ["Inference", "Robustness", "Alignment", "Watermarking", "Synthesis", "TensorIO", "LinearAlgebra", "weightmark", "WeightMarkTestSupport"]),
        .testTarget(name: "LineageTests", dependencies: ["Lineage", "Alignment", "TensorIO", "LinearAlgebra", "weightmark", "WeightMarkTestSupport"]),
        .testTarget(name: "SynthesisTests", dependencies: ["Synthesis", "TensorIO", "WeightMarkTestSupport"]),
        .testTarget(name: "GGUFTests", dependencies: ["TensorIO", "Conversion", "Watermarking", "WeightMarkTestSupport"]),
        .testTarget(name: "AttacksTests", dependencies: ["Attacks", "Conversion", "Robustness", "Watermarking", "TensorIO", "LinearAlgebra", "WeightMarkTestSupport"]),
        .testTarget(name: "ContainersTests", dependencies: ["weightmark", "TensorIO", "WeightMarkTestSupport"]),
        .testTarget(name: "EvidenceTests", dependencies: ["Evidence", "weightmark", "Watermarking", "TensorIO", "WeightMarkTestSupport"]),
        .testTarget(name: "ScanTests", dependencies: ["weightmark", "Scanning", "Watermarking", "Evidence", "TensorIO", "WeightMarkTestSupport"],
                    exclude: ["dask_scan.py"]),
        .testTarget(name: "WeightMarkCLITests", dependencies: ["weightmark", "Watermarking", "TensorIO", "Conversion", "LinearAlgebra", "WeightMarkTestSupport",
                                                      .product(name: "Crypto", package: "swift-crypto")],
                    exclude: ["Help", "Golden"]),
        .testTarget(name: "WatermarkingTests", dependencies: ["Watermarking", "TensorIO", "Conversion", "LinearAlgebra", "CKernels", "CTensorIOKernels", "WeightMarkTestSupport"],
                    exclude: ["Golden"]),

        .executableTarget(name: "InspectModel", dependencies: ["TensorIO"], path: "Examples/InspectModel"),
        // The package-benchmark suites are a package of their own (Benchmarks/Package.swift, `make bench`).
    ]
)

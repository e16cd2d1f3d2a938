// swift-tools-version: 6.1
// A package that uses WeightMark as a library, as your own package would: by version, from its git URL.
// Point the URL at wherever you host WeightMark; `make test` builds this package against a tagged local copy
// (Tests/WeightMarkCLITests/ConsumerPackageTests.swift).
import PackageDescription

let package = Package(
    name: "MarkAndCheck",
    dependencies: [
        .package(url: "https://example.invalid/weightmark.git", from: "0.3.0"),
    ],
    targets: [
        .executableTarget(name: "MarkAndCheck", dependencies: [
            .product(name: "TensorIO", package: "weightmark"),
            .product(name: "Watermarking", package: "weightmark"),
        ]),
    ]
)

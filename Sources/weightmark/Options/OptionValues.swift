import ArgumentParser
import Conversion
import Scanning
import TensorIO
import Watermarking

// Closed option values: each is an enum the parser knows, so `--help` lists the values, a wrong one is refused with
// the list, and shell completion offers them.

extension WatermarkShaping: ExpressibleByArgument {}

extension MarkVersion: ExpressibleByArgument {
    public init?(argument: String) {
        switch argument.lowercased() {
        case "v1", "1": self = .v1
        case "v2", "2": self = .v2
        default: return nil
        }
    }
    public static var allValueStrings: [String] { ["v1", "v2"] }
    public static var allValueDescriptions: [String: String] { [:] }
    public var defaultValueDescription: String { description }
}

extension MarkVersionSearch: ExpressibleByArgument {}

extension ScanMarkVersions: ExpressibleByArgument {}

/// `bench --shaping`: one shaping, or both side by side.
enum BenchShaping: String, CaseIterable, ExpressibleByArgument {
    case uniform, magnitude, both

    var shapings: [WatermarkShaping] {
        switch self {
        case .uniform: [.uniform]
        case .magnitude: [.magnitude]
        case .both: [.uniform, .magnitude]
        }
    }
}

/// `convert --to`: the formats `convert` writes.
enum ConvertFormat: String, CaseIterable, ExpressibleByArgument {
    case gguf
}

/// `convert --type`: the ggml types `convert` writes (`GGUFConverter.outputTypes`), spelled as llama.cpp does;
/// any letter case is accepted.
struct GGUFOutputType: ExpressibleByArgument, CaseIterable, Equatable {
    let type: GGMLType

    static var allCases: [GGUFOutputType] { GGUFConverter.outputTypes.map(GGUFOutputType.init(type:)) }

    init(type: GGMLType) { self.type = type }

    init?(argument: String) {
        guard let t = GGUFConverter.outputTypes.first(where: { $0.name == argument.uppercased() }) else { return nil }
        type = t
    }

    static var allValueStrings: [String] { allCases.map(\.type.name) }
    var defaultValueDescription: String { type.name }
}

/// `synth --dtype`: the storage types `synth` writes (`fp16` is accepted for f16).
enum SynthDType: String, CaseIterable, ExpressibleByArgument {
    case bf16, f16, f32

    init?(argument: String) {
        let a = argument.lowercased()
        self.init(rawValue: a == "fp16" ? "f16" : a)
    }

    var dtype: DType {
        switch self {
        case .bf16: .bf16
        case .f16: .f16
        case .f32: .f32
        }
    }
}

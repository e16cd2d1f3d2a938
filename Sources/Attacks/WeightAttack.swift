import TensorIO

/// One thing a leaker does to weights, applied tensor by tensor.
///
/// Attacks are deterministic given their parameters (random ones take a `seed`). They see decoded
/// `Float` values; `outputDType` says how the attacked tensor is stored (casts change it, simulations of
/// quantization store the dequantized values in the original dtype).
public protocol WeightAttack: Sendable {
    /// Canonical spec, e.g. `prune:fraction=0.5,mode=magnitude`.
    var spec: String { get }
    /// Whether this tensor is touched. Default: 2-D float tensors.
    func applies(to name: String, shape: [Int], dtype: DType) -> Bool
    /// Called once with the whole model before any tensor is transformed (global thresholds, pairings).
    mutating func prepare(model: SafetensorsModel, context: AttackContext) throws
    /// Transforms one tensor's values in place (row-major).
    func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws
    /// How the attacked tensor is stored.
    func outputDType(for dtype: DType) -> DType
}

extension WeightAttack {
    public func applies(to name: String, shape: [Int], dtype: DType) -> Bool {
        shape.count == 2 && dtype.isSupportedFloat
    }
    public mutating func prepare(model: SafetensorsModel, context: AttackContext) throws {}
    public func outputDType(for dtype: DType) -> DType { dtype }
}

/// What some attacks need beyond the tensor itself.
public struct AttackContext: Sendable {
    /// Re-marks an m×n matrix in place with the `copy`-th foreign key at `scale` × the default strength.
    /// Supplied by the caller (the attacks module does not know about watermarking).
    public typealias Remarker = @Sendable (_ copy: Int, _ name: String, _ rows: Int, _ cols: Int,
                                           _ values: inout [Float], _ scale: Double) throws -> Void
    public var remark: Remarker?
    /// The unmarked original (collusion builds other recipients' copies from it).
    public var original: SafetensorsModel?
    /// An independent model of the same shapes for merging; nil → a synthetic one with matched statistics.
    public var mergePartner: SafetensorsModel?

    public init(remark: Remarker? = nil, original: SafetensorsModel? = nil, mergePartner: SafetensorsModel? = nil) {
        self.remark = remark; self.original = original; self.mergePartner = mergePartner
    }
}

/// Why an attack could not be built or run.
public enum AttackError: Error, CustomStringConvertible, Sendable {
    case unknownAttack(String)
    case invalidParameter(attack: String, parameter: String, reason: String)
    case unknownParameter(attack: String, parameter: String, allowed: [String])
    case missingContext(attack: String, reason: String)
    case nonFiniteWeights(attack: String, tensor: String, count: Int)
    case emptySpec

    public var description: String {
        switch self {
        case let .unknownAttack(name):
            "unknown attack \"\(name)\"; `weightmark attack --list` shows them all"
        case let .invalidParameter(attack, parameter, reason):
            "\(attack): \(parameter) \(reason)"
        case let .unknownParameter(attack, parameter, allowed):
            "\(attack): unknown parameter \"\(parameter)\" (allowed: \(allowed.joined(separator: ", ")))"
        case let .missingContext(attack, reason):
            "\(attack): \(reason)"
        case let .nonFiniteWeights(attack, tensor, count):
            "\(attack): tensor \"\(tensor)\" holds \(count) NaN or infinite values; GGUF block quantization needs finite weights (llama.cpp's loader rejects such rows too). Repair the model first"
        case .emptySpec:
            "empty attack spec; give e.g. --attack int4:group=128 or a chain prune:fraction=0.5,int8"
        }
    }
}

/// A deterministic per-tensor seed: the attack's seed mixed with the tensor name (FNV-1a).
func tensorSeed(_ seed: UInt64, _ name: String) -> UInt64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ seed
    for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    return h
}

import Conversion
import TensorIO

/// llama.cpp block quantization, simulated: each row is quantized to `type` and dequantized.
///
/// Rows whose length is not a multiple of the type's block size get llama.cpp's fallback type
/// (Q4_K → Q5_0, Q6_K → Q8_0, as `llama-quantize` does for such tensors; none for 32-blocks: such rows are
/// left as they are and counted).
public struct GGUFQuantization: WeightAttack {
    public let type: GGMLType
    public init(type: GGMLType) { self.type = type }
    public var spec: String { "gguf:type=\(type.name)" }

    static let fallback: [GGMLType: GGMLType] = [.q4_K: .q5_0, .q6_K: .q8_0]

    /// The type actually used for rows of length `n`.
    public func effectiveType(rowLength n: Int) -> GGMLType? {
        if n % type.blockLayout.elements == 0 { return type }
        if let f = Self.fallback[type], n % f.blockLayout.elements == 0 { return f }
        return nil
    }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        let (m, n) = (shape[0], shape[1])
        guard let t = effectiveType(rowLength: n) else { return }
        let nonFinite = values.reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
        guard nonFinite == 0 else { throw AttackError.nonFiniteWeights(attack: spec, tensor: name, count: nonFinite) }
        for i in 0..<m {
            let row = Array(values[(i * n)..<((i + 1) * n)])
            let q = GGMLQuantizer.quantize(row, as: t)
            let back = q.withUnsafeBytes { GGMLBlockCodec.dequantize($0, as: t, count: n) }
            values.replaceSubrange((i * n)..<((i + 1) * n), with: back)
        }
    }
}

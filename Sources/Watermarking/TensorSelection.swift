#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import TensorIO

/// Which tensors carry the mark. Depends only on names, dtypes and shapes, so the detector re-derives it
/// from a suspect without a manifest.
///
/// Default: 2-D floating tensors (F32, F16, BF16, F64) with at least 65,536 elements whose name does not
/// mention a norm or a bias. `include` globs select any 2-D float tensor they match; `exclude` globs
/// (applied last) remove tensors.
public struct TensorSelection: Sendable, Codable, Equatable {
    public var include: [String]
    public var exclude: [String]
    public var minimumElements: Int

    public static let defaultMinimumElements = 65_536

    public init(include: [String] = [], exclude: [String] = [], minimumElements: Int = defaultMinimumElements) {
        self.include = include; self.exclude = exclude; self.minimumElements = minimumElements
    }

    public func selects(name: String, dtype: DType, shape: [Int]) -> Bool {
        selects(name: name, shape: shape, isFloating: dtype.isSupportedFloat)
    }

    /// The same rule for any decodable tensor (e.g. a quantized GGUF tensor seen under its Hugging Face name).
    public func selects(_ t: SourceTensor) -> Bool { selects(name: t.name, shape: t.shape, isFloating: t.isFloating) }

    public func selects(name: String, shape: [Int], isFloating: Bool) -> Bool {
        guard shape.count == 2, isFloating, shape[0] > 0, shape[1] > 0 else { return false }
        if exclude.contains(where: { Self.glob($0, matches: name) }) { return false }
        if include.contains(where: { Self.glob($0, matches: name) }) { return true }
        let lower = name.lowercased()
        if lower.contains("norm") || lower.hasSuffix("bias") { return false }
        return shape[0] * shape[1] >= minimumElements
    }

    /// Format v2's rule, which ignores names (a leak may rename anything): every 2-D floating tensor with at least
    /// `minimumElements` elements, plus those `include` matches, minus those `exclude` matches.
    public func selectsGeometry(_ t: SourceTensor) -> Bool {
        guard t.shape.count == 2, t.isFloating, t.shape[0] > 0, t.shape[1] > 0 else { return false }
        if exclude.contains(where: { Self.glob($0, matches: t.name) }) { return false }
        if include.contains(where: { Self.glob($0, matches: t.name) }) { return true }
        return t.shape[0] * t.shape[1] >= minimumElements
    }

    /// "default selection", or the globs that adjust it.
    public var summary: String {
        var parts: [String] = []
        if !include.isEmpty { parts.append("include " + include.joined(separator: ", ")) }
        if !exclude.isEmpty { parts.append("exclude " + exclude.joined(separator: ", ")) }
        if minimumElements != Self.defaultMinimumElements { parts.append("at least \(minimumElements) elements") }
        return parts.isEmpty ? "default selection" : parts.joined(separator: "; ")
    }

    /// Shell-style glob (`*`, `?`, `[...]`) over the whole name; `*` also crosses dots.
    public static func glob(_ pattern: String, matches name: String) -> Bool {
        fnmatch(pattern, name, 0) == 0
    }
}

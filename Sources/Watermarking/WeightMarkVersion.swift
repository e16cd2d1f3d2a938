/// Versions of the tool and of the on-disk watermark format.
///
/// A format version changes only when detection of marks made by earlier versions would change; golden
/// vectors guard each (Tests/WatermarkingTests/Golden). Every version ever released stays detectable.
public enum WeightMarkVersion {
    /// The newest format, which `embed` writes by default.
    public static let version = MarkVersion.v2.rawValue
    public static let toolVersion = "0.2.0"
}

/// A watermark format (docs/FORMAT.md).
public enum MarkVersion: Int, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// Carriers derived from each tensor's name and shape (docs/FORMAT.md, format v1): lost when names change.
    case v1 = 1
    /// Carriers derived from the key and tile positions only: survives renames, transposes, resized
    /// vocabularies, and matrices cut or joined on tile boundaries.
    case v2 = 2

    public var description: String { "v\(rawValue)" }
}

/// The carriers `Embedder.markStreaming` draws the pattern from.
enum MarkCarriers {
    case v1(Carriers)
    case v2(TileCarriers)
}

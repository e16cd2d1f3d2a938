/// Versions of the tool and of the on-disk watermark format.
///
/// `version` changes only when detection of marks made by earlier versions would change; golden
/// vectors guard it.
public enum WatermarkFormat {
    public static let version = 1
    public static let toolVersion = "0.1.0"
}

// Keys, carriers, embedding and detection (see DESIGN.md §3).
public enum WatermarkFormat { public static let version = 1 }

import Crypto
import Foundation
import LinearAlgebra

/// Foreign keys and re-marking, for attacks that add other owners' marks (overwrite, collusion).
public enum Remarking {
    /// A deterministic stand-in key for "recipient/owner number `copy`": never the user's key.
    public static func foreignKey(copy: Int, seed: UInt64 = 0) -> WatermarkKey {
        let digest = SHA256.hash(data: Array("weightmark foreign key|\(seed)|\(copy)".utf8))
        return WatermarkKey(secret: Array(digest), created: Date(timeIntervalSince1970: 0))
    }

    /// Marks an m×n matrix in place with foreign key `copy` at relative distortion `delta`.
    /// In `format` (the shipped v2 unless asked), as `embed` would have marked it for that key.
    public static func mark(copy: Int, name: String, rows: Int, cols: Int, values: inout [Float], delta: Double,
                            shaping: WatermarkShaping = .uniform, rank: Int = Carriers.defaultRank, format: MarkVersion = .v2) throws {
        let key = foreignKey(copy: copy)
        var w = Matrix(rows: rows, cols: cols, storage: values)
        switch format {
        case .v1:
            try Embedder.mark(&w, carriers: try Carriers.derive(secret: key.secret, tensor: name, rows: rows, cols: cols, rank: rank), shaping: shaping, delta: delta)
        case .v2:
            try Embedder.mark(&w, tiles: try TileCarriers(secret: key.secret), shaping: shaping, delta: delta)
        }
        values = w.storage
    }
}

import Crypto
import Foundation
import TensorIO

/// A manifest as read from its file, with the SHA-256 of the exact bytes (what a timestamp or a key store record
/// binds).
public struct LoadedManifest: Sendable {
    public var manifest: EmbedManifest
    public var path: String
    public var bytes: [UInt8]
    public var sha256Hex: String { SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }
}

extension EmbedManifest {
    /// Reads and decodes an embed manifest: the one place a manifest file is parsed.
    /// - Throws: `WatermarkError.invalidManifest` saying why (missing, unreadable, not JSON, which field is wrong).
    public static func load(path: String) throws -> LoadedManifest {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw WatermarkError.invalidManifest(path: path, reason: FileManager.default.fileExists(atPath: path)
                ? "the file cannot be read (permissions?)" : "no such file (embed writes OUT.weightmark.json next to the output)")
        }
        if let d = StrictJSON.duplicateKey(in: data) { throw TensorIOError.duplicateJSONKey(path: path, key: d.key, offset: d.offset) }
        do {
            let m = try JSONDecoder().decode(EmbedManifest.self, from: data)
            return LoadedManifest(manifest: m, path: path, bytes: Array(data))
        } catch let DecodingError.keyNotFound(key, _) {
            throw WatermarkError.invalidManifest(path: path, reason: "field \"\(key.stringValue)\" is missing")
        } catch let DecodingError.typeMismatch(_, context), let DecodingError.valueNotFound(_, context) {
            throw WatermarkError.invalidManifest(path: path, reason: "field \"\(context.codingPath.map(\.stringValue).joined(separator: "."))\" has the wrong type")
        } catch {
            throw WatermarkError.invalidManifest(path: path, reason: "not JSON of an embed manifest")
        }
    }
}

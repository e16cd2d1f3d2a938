import Crypto
import Foundation
import TensorIO

/// A watermark owner's secret: 256 bits from the system CSPRNG.
///
/// The secret never appears in reports; the `id` (a hash of the secret) identifies the key everywhere.
public struct WatermarkKey: Sendable {
    public let secret: [UInt8]
    public let created: Date

    public static let formatName = "weightmark-key"
    public static let fileVersion = 1

    public init(secret: [UInt8], created: Date = Date()) {
        precondition(secret.count == 32, "a watermark key has 32 bytes")
        self.secret = secret
        self.created = created
    }

    /// A new key from the system's cryptographically secure generator.
    public static func generate() -> WatermarkKey {
        let key = SymmetricKey(size: .bits256)
        return WatermarkKey(secret: key.withUnsafeBytes { Array($0) })
    }

    /// First 16 hex digits of SHA-256 over a domain label and the secret.
    public var id: String {
        let digest = SHA256.hash(data: Array("weightmark key id v1".utf8) + secret)
        return digest.prefix(8).hex
    }

    struct FileContents: Codable {
        var format: String
        var version: Int
        var secret: String
        var keyId: String
        var created: String
    }

    /// The key file's JSON text.
    public func fileContents() throws -> [UInt8] {
        let iso = ISO8601DateFormatter()
        let contents = FileContents(format: WatermarkKey.formatName, version: WatermarkKey.fileVersion,
                                    secret: secret.hex, keyId: id,
                                    created: iso.string(from: created))
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        return Array(try e.encode(contents)) + [0x0A]
    }

    /// Writes the key file to `path` atomically with mode 0600 from its first byte (the temporary file is
    /// created 0600 and renamed into place), never replacing an existing file.
    /// - Throws: `TensorIOError.outputExists` if `path` exists, `TensorIOError.writeFailed` otherwise.
    public func save(to path: String) throws {
        try AtomicFileWriter.write(try fileContents(), to: path, overwrite: false, mode: 0o600)
    }

    /// A warning when the key file at `path` can be read by its group or by others (a secret should be 0600).
    public static func permissionWarning(path: String) -> String? {
        guard let mode = (try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? Int,
              mode & 0o077 != 0 else { return nil }
        return "warning: \(path) is readable or writable by others (mode \(String(mode, radix: 8))); anyone who reads it can forge or strip marks. Fix it with: chmod 600 \(path)"
    }

    /// Loads and checks a key file.
    /// - Throws: `WatermarkError.invalidKey` naming the file and what is wrong with it.
    public static func load(from path: String) throws -> WatermarkKey {
        guard FileManager.default.fileExists(atPath: path) else {
            throw WatermarkError.invalidKey(path: path, reason: "no such file; create one with `weightmark keygen --out \(path)`")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw WatermarkError.invalidKey(path: path, reason: "cannot read the file (permissions?)")
        }
        let c: FileContents
        if let d = StrictJSON.duplicateKey(in: data) { throw TensorIOError.duplicateJSONKey(path: path, key: d.key, offset: d.offset) }
        do {
            c = try JSONDecoder().decode(FileContents.self, from: data)
        } catch {
            throw WatermarkError.invalidKey(path: path, reason: "not a WeightMark key file (expected JSON with format, version, secret, keyId, created)")
        }
        guard c.format == formatName else {
            throw WatermarkError.invalidKey(path: path, reason: "format is \"\(c.format)\", expected \"\(formatName)\"")
        }
        guard c.version == fileVersion else {
            throw WatermarkError.invalidKey(path: path, reason: "key file version \(c.version) is not supported (this tool reads version \(fileVersion))")
        }
        let hex = Array(c.secret.utf8)
        guard hex.count == 64, let bytes = [UInt8](hexadecimal: String(decoding: hex, as: UTF8.self)) else {
            throw WatermarkError.invalidKey(path: path, reason: "secret must be 64 hex digits")
        }
        let key = WatermarkKey(secret: bytes, created: ISO8601DateFormatter().date(from: c.created) ?? Date(timeIntervalSince1970: 0))
        guard key.id == c.keyId else {
            throw WatermarkError.invalidKey(path: path, reason: "keyId \(c.keyId) does not match the secret (file edited or corrupted)")
        }
        return key
    }

}

import Crypto
import Foundation
import TensorIO

/// A file of a manifest: name, size and SHA-256 (nil for inputs not hashed; see `EmbedOptions.hashInputs`).
public struct FileDigest: Sendable, Codable, Equatable {
    public var file: String
    public var bytes: Int
    public var sha256: String?

    public init(file: String, bytes: Int, sha256: String?) {
        self.file = file
        self.bytes = bytes
        self.sha256 = sha256
    }

    /// Hashes through the mapping 64 MiB at a time, releasing each chunk's pages after use so hashing a
    /// multi-GB shard does not grow the resident set.
    public static func of(file: String) throws -> FileDigest {
        let mapped = try MappedFile(path: file)
        let hex = mapped.withBytes { all in
            var hasher = SHA256()
            let chunk = 64 << 20
            var start = 0
            while start < all.count {
                let end = min(all.count, start + chunk)
                hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: all[start..<end]))
                mapped.release(start..<end)
                start = end
            }
            return hasher.finalize().hex
        }
        return FileDigest(file: (file as NSString).lastPathComponent, bytes: mapped.size, sha256: hex)
    }
}

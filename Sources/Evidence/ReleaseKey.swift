import Crypto
import Foundation
import Watermarking

/// Per-release subkeys: the model of release R is marked with a key derived from the owner key and R, so a dispute
/// over one release reveals that release's subkey and never the owner key (docs/FORMAT.md, "Releases").
///
///     subkey = HKDF-SHA256(IKM = owner secret, salt = "weightmark/release/v1/hkdf-salt",
///                          info = "weightmark/release/v1|" ‖ release id, L = 32)
public enum ReleaseKey {
    public static let salt = Array("weightmark/release/v1/hkdf-salt".utf8)
    public static let infoPrefix = "weightmark/release/v1|"

    /// Whether `id` can name a release: 1…64 ASCII letters, digits, `.`, `_` or `-`.
    public static func isValid(releaseID id: String) -> Bool {
        !id.isEmpty && id.utf8.count <= 64 && id.utf8.allSatisfy { c in
            (0x30...0x39).contains(c) || (0x41...0x5A).contains(c) || (0x61...0x7A).contains(c) || c == 0x2E || c == 0x5F || c == 0x2D
        }
    }

    /// A fresh release id: 16 hexadecimal digits (64 bits) from the system's secure generator.
    public static func randomReleaseID() -> String {
        var g = SystemRandomNumberGenerator()
        return (0..<8).map { _ in UInt8.random(in: 0...255, using: &g) }.hexString
    }

    /// The subkey that marks release `releaseID` of `owner`'s models.
    /// - Throws: `EvidenceError.invalidReleaseID` for ids outside `isValid(releaseID:)`.
    public static func derive(owner: WatermarkKey, releaseID: String) throws -> WatermarkKey {
        guard isValid(releaseID: releaseID) else { throw EvidenceError.invalidReleaseID(releaseID) }
        let key = HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: owner.secret), salt: salt,
                                          info: Array((infoPrefix + releaseID).utf8), outputByteCount: 32)
        return WatermarkKey(secret: key.withUnsafeBytes { Array($0) }, created: owner.created)
    }
}

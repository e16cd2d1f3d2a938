import Evidence
import Foundation
import Testing
import Watermarking

@Suite("Release subkeys and commitments")
struct CommitmentTests {
    static let owner = WatermarkKey(secret: (0..<32).map { UInt8($0) })

    @Test("the release subkey is HKDF-SHA256 of the owner key with the documented salt and info")
    func subkeyDerivation() throws {
        let a = try ReleaseKey.derive(owner: Self.owner, releaseID: "v1")
        let b = try ReleaseKey.derive(owner: Self.owner, releaseID: "v2")
        #expect(a.secret != b.secret && a.secret != Self.owner.secret)
        #expect(try ReleaseKey.derive(owner: Self.owner, releaseID: "v1").secret == a.secret)
        // Known answer, computed independently with Python's hmac module (RFC 5869 extract-then-expand).
        #expect(a.secret.map { String(format: "%02x", $0) }.joined() == Self.expectedV1)
        #expect(throws: EvidenceError.self) { try ReleaseKey.derive(owner: Self.owner, releaseID: "bad id/") }
        #expect(!ReleaseKey.isValid(releaseID: "") && !ReleaseKey.isValid(releaseID: String(repeating: "a", count: 65)))
        #expect(ReleaseKey.randomReleaseID().count == 16)
    }
    static let expectedV1 = "1351a747fa49b788c58963c90e41d6e5ee754cca220d2253f4742ed13721c02e"

    @Test("an opening opens its commitment and any altered field breaks it")
    func openingTamper() throws {
        let release = try ReleaseKey.derive(owner: Self.owner, releaseID: "r1")
        let params = CommitmentParameters(markFormat: .v2, delta: 4.2e-3, shaping: .uniform, rank: 32, selection: TensorSelection())
        let o = CommitmentOpening(releaseId: "r1", owner: Self.owner, release: release, nonce: [UInt8](repeating: 7, count: 32),
                                  originalTensorsSHA256: [UInt8](repeating: 9, count: 32), parameters: params)
        _ = try o.validated(path: "o.json")
        var n = o; n.nonce = String(repeating: "08", count: 32)
        var d = o; d.originalTensorsSHA256 = String(repeating: "0a", count: 32)
        var p = o; p.parameters.delta = 4.3e-3
        var c = o; c.commitment = String(repeating: "00", count: 32)
        for altered in [n, d, p, c] {
            #expect(throws: EvidenceError.self) { try altered.validated(path: "o.json") }
        }
    }
}

import Evidence
import Foundation
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport

/// The owner's key store (docs/FORMAT.md, "The owner's key store"): records are never lost or replaced, default
/// release ids are never handed out twice, secrets are 0600 from the first byte.
@Suite("Owner key store")
struct KeyStoreTests {
    static func record(_ owner: WatermarkKey, release: String?) throws -> KeyStoreRecord {
        let key = try release.map { try ReleaseKey.derive(owner: owner, releaseID: $0) } ?? owner
        return KeyStoreRecord(releaseId: release, markKeyId: key.id, ownerKeyId: owner.id, commitment: nil, opening: nil,
                              manifestPath: "/nonexistent/m.weightmark.json", manifestSHA256: String(repeating: "0", count: 64),
                              output: "/nonexistent/out", input: "/nonexistent/in", recipients: nil, markFormat: 2)
    }

    @Test("concurrent embeds: 8 threads × 25 take 200 distinct default ids r1…r200 and add 200 records, none lost")
    func concurrentReservations() throws {
        let dir = Fixtures.temporaryDirectory("keystore")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let owner = WatermarkKey.generate()
        let store = KeyStore(keyPath: dir + "/owner.key")
        let ids = Locked<[String]>([])
        let failures = Locked<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            for _ in 0..<25 {
                do {
                    let id = try store.reserveDefaultReleaseID()
                    try store.add(try Self.record(owner, release: id))
                    ids.withLock { $0.append(id) }
                } catch { failures.withLock { $0.append("\(error)") } }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 }.prefix(3))")
        let taken = ids.withLock { $0 }
        #expect(Set(taken).count == 200 && Set(taken) == Set((1...200).map { "r\($0)" }))
        let (records, unreadable) = try store.records()
        #expect(records.count == 200 && unreadable.isEmpty)
        #expect(store.highestDefaultIndex() == 200)
        // 0700 folder, 0600 records: the opening inside a record is a secret.
        let folderMode = try FileManager.default.attributesOfItem(atPath: store.path)[.posixPermissions] as? Int
        #expect(folderMode == 0o700)
        for name in try FileManager.default.contentsOfDirectory(atPath: store.path + "/records") {
            #expect(try FileManager.default.attributesOfItem(atPath: store.path + "/records/" + name)[.posixPermissions] as? Int == 0o600)
        }
    }

    @Test("the same release recorded twice keeps both records; an unreadable record is reported by name, not dropped silently")
    func neverReplaced() throws {
        let dir = Fixtures.temporaryDirectory("keystore2")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let owner = WatermarkKey.generate()
        let store = KeyStore(keyPath: dir + "/owner.key")
        let a = try store.add(try Self.record(owner, release: "v1"))
        let b = try store.add(try Self.record(owner, release: "v1"))
        #expect(a != b)
        Fixtures.write(Array("{\"format\": \"weightmark-keystore-record\"".utf8), to: store.path + "/records/broken-1.json")
        let (records, unreadable) = try store.records()
        #expect(records.count == 2)
        #expect(unreadable.count == 1 && unreadable[0].path.hasSuffix("broken-1.json"))
        let candidates = try KeyCandidates.resolve(owner: owner, ownerPath: dir + "/owner.key", releaseID: nil, opening: nil, manifest: nil)
        #expect(candidates.count == 2, "owner key + release v1 once (distinct keys only)")
        #expect(candidates.notes.contains { $0.contains("broken-1.json") })
    }

    @Test("records of another owner key, or whose subkey does not derive from the owner key, are skipped with a note")
    func foreignRecords() throws {
        let dir = Fixtures.temporaryDirectory("keystore3")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let owner = WatermarkKey.generate(), other = WatermarkKey.generate()
        let store = KeyStore(keyPath: dir + "/owner.key")
        try store.add(try Self.record(other, release: "x"))
        var forged = try Self.record(owner, release: "y")
        forged.markKeyId = other.id
        try store.add(forged)
        let c = try KeyCandidates.resolve(owner: owner, ownerPath: dir + "/owner.key", releaseID: nil, opening: nil, manifest: nil)
        #expect(c.count == 1)
        #expect(c.notes.count == 2)
    }

    @Test("without a store the owner key enumerates r1…r16; with one, the ids it reserved")
    func enumeration() throws {
        let dir = Fixtures.temporaryDirectory("keystore4")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let owner = WatermarkKey.generate()
        let none = try KeyCandidates.resolve(owner: owner, ownerPath: dir + "/owner.key", releaseID: nil, opening: nil, manifest: nil)
        #expect(none.count == 17 && none.candidates.last?.releaseId == "r16")
        let store = KeyStore(keyPath: dir + "/owner.key")
        for _ in 0..<3 { _ = try store.reserveDefaultReleaseID() }
        let three = try KeyCandidates.resolve(owner: owner, ownerPath: dir + "/owner.key", releaseID: nil, opening: nil, manifest: nil)
        #expect(three.candidates.map { $0.releaseId ?? "owner" } == ["owner", "r1", "r2", "r3"])
        let explicit = try KeyCandidates.resolve(owner: owner, ownerPath: dir + "/owner.key", releaseID: nil, opening: nil, manifest: nil, enumerate: 0)
        #expect(explicit.count == 1)
    }
}

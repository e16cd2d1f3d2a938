import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// Personal copies made by earlier versions must keep tracing, and `--recipients` must write exactly the copies
/// `--recipient` writes one at a time.
///
/// `Golden/personal-copies.json` holds a fixed test key and the SHA-256 of the personal copies earlier versions wrote of the
/// small fixture model (f32 and bf16) for one recipient, marked with the owner key itself (`--no-release`, the only
/// way copies were made before release subkeys reached personal copies). If a hash changes, copies already handed
/// out were made with another code or carrier: that is a format change, never a vector to update.
/// WEIGHTMARK_WRITE_GOLDEN=1 rewrites the hashes (keeping the key) and fails on purpose.
@Suite("Personal copies: golden compatibility and one-pass --recipients")
struct PersonalCopyCompatTests {
    struct Golden: Codable {
        var keyFile: String
        var recipient: String
        /// dtype → SHA-256 of the personal copy's safetensors file.
        var copies: [String: String]
        /// dtype → the same copy's SHA-256 as written on machines whose OpenBLAS picks another GEMM kernel: f32
        /// copies round the carrier products in the kernel's summation order, so their last bits depend on it
        /// (measured on one machine with OPENBLAS_CORETYPE: Haswell/Zen/Cooperlake give one hash, SandyBridge/
        /// Nehalem/Core2 another; `copies` was written on an AVX-512 machine). bf16 copies round those bits away.
        var kernelVariants: [String: [String]]?
    }

    static let goldenURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/personal-copies.json")

    static func sha256(_ path: String) throws -> String {
        let r = try Fixtures.runProcess("/usr/bin/env", ["sha256sum", path])
        return String(r.stdout.prefix(64))
    }

    @Test("a copy made with the owner key (as earlier versions made them) is reproduced byte for byte and still traces with --key alone", arguments: [DType.f32, .bf16])
    func ownerKeyCopies(_ dtype: DType) throws {
        var golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Self.goldenURL))
        let dir = Fixtures.temporaryDirectory("copy-compat")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors", dtype: dtype)
        try golden.keyFile.write(toFile: dir + "/owner.key", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: dir + "/owner.key")
        let e = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--no-release",
                                         "--recipient", golden.recipient, "--out", dir + "/copy.safetensors", "--quiet"])
        #expect(e.status == 0, "\(e.stderr)")
        let hash = try Self.sha256(dir + "/copy.safetensors")
        if ProcessInfo.processInfo.environment["WEIGHTMARK_WRITE_GOLDEN"] == "1" {
            golden.copies[dtype.rawValue] = hash
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try enc.encode(golden).write(to: Self.goldenURL)
            Issue.record("vectors rewritten: Golden/personal-copies.json (\(dtype.rawValue)); review the diff before committing. This run fails on purpose.")
            return
        }
        let accepted = [golden.copies[dtype.rawValue]].compactMap { $0 } + (golden.kernelVariants?[dtype.rawValue] ?? [])
        #expect(accepted.contains(hash), "the owner-key personal copy of the \(dtype.rawValue) fixture changed: copies already handed out would no longer trace")
        try ([golden.recipient] + (0..<100).map { "innocent-\($0)" }).joined(separator: "\n").write(toFile: dir + "/ids.txt", atomically: true, encoding: .utf8)
        let t = try Fixtures.weightmark(["trace", dir + "/copy.safetensors", "--key", dir + "/owner.key", "--reference", dir + "/model.safetensors",
                                         "--recipients", dir + "/ids.txt", "--json", "--quiet"])
        #expect(t.status == 0, "\(t.stdout)\(t.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(t.stdout.utf8)) as? [String: Any])
        #expect((report["accused"] as? [[String: Any]])?.map { $0["recipient"] as? String } == [golden.recipient])
    }

    static func writeKey(_ golden: Golden, to path: String) throws {
        try golden.keyFile.write(toFile: path, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
    }

    static func json(_ path: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    @Test("--recipients writes, in passes of 8 copies over the original, the bytes --recipient writes for each id alone", arguments: [DType.f32, .bf16])
    func onePassMatchesOneAtATime(_ dtype: DType) throws {
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Self.goldenURL))
        let dir = Fixtures.temporaryDirectory("copy-pass")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors", dtype: dtype)
        try Self.writeKey(golden, to: dir + "/owner.key")
        // 9 ids: a pass of 8 copies and a pass of 1.
        let ids = (1...9).map { "recipient-\($0)@example.org" }
        try ids.joined(separator: "\n").write(toFile: dir + "/ids.txt", atomically: true, encoding: .utf8)
        let all = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--release", "r1",
                                           "--recipients", dir + "/ids.txt", "--out", dir + "/copies"])
        #expect(all.status == 0, "\(all.stderr)")
        // Progress on stderr says when each copy is done.
        #expect(all.stderr.contains("copy 1/9 marked: recipient-1@example.org") && all.stderr.contains("copy 9/9 marked: recipient-9@example.org"), "\(all.stderr)")
        for k in [0, 7, 8] {
            let one = dir + "/one-\(k).safetensors"
            let r = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--release", "r1",
                                             "--recipient", ids[k], "--out", one, "--opening", dir + "/one-\(k).opening.json", "--quiet"])
            #expect(r.status == 0, "\(r.stderr)")
            let together = try Data(contentsOf: URL(fileURLWithPath: dir + "/copies/\(ids[k]).safetensors"))
            #expect(together == (try Data(contentsOf: URL(fileURLWithPath: one))), "copy of \(ids[k]) (\(dtype.rawValue)) differs between --recipients and --recipient")
            // The manifests agree too, apart from when they were made and the run's commitment nonce.
            let a = try Self.json(dir + "/copies/\(ids[k]).safetensors.weightmark.json"), b = try Self.json(one + ".weightmark.json")
            #expect((a["tensors"] as? [[String: Any]])?.map { $0["measuredDelta"] as? Double } == (b["tensors"] as? [[String: Any]])?.map { $0["measuredDelta"] as? Double })
            #expect((a["output"] as? [[String: Any]])?.first?["sha256"] as? String == (b["output"] as? [[String: Any]])?.first?["sha256"] as? String)
        }
    }

    @Test("personal copies for a release: the manifest records release, commitment and recipient; trace takes --release, --manifest or --opening")
    func releaseCopies() throws {
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: Self.goldenURL))
        let dir = Fixtures.temporaryDirectory("copy-release")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors")
        try Self.writeKey(golden, to: dir + "/owner.key")
        let ids = ["alice@example.org", "bob@example.org", "carol@example.org"]
        try ids.joined(separator: "\n").write(toFile: dir + "/ids.txt", atomically: true, encoding: .utf8)
        // No --release: a fresh release id, as plain embed does.
        let e = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--recipients", dir + "/ids.txt",
                                         "--out", dir + "/copies", "--quiet"])
        #expect(e.status == 0, "\(e.stderr)")
        let opening = dir + "/copies.opening.json"
        let mode = try FileManager.default.attributesOfItem(atPath: opening)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let bob = dir + "/copies/bob@example.org.safetensors"
        let manifest = try Self.json(bob + ".weightmark.json")
        let release = try #require(manifest["release"] as? [String: Any])
        let releaseID = try #require(release["id"] as? String)
        #expect((release["commitment"] as? String)?.count == 64)
        #expect((manifest["fingerprint"] as? [String: Any])?["recipient"] as? String == "bob@example.org")
        #expect(manifest["keyId"] as? String == release["keyId"] as? String && manifest["keyId"] as? String != "3a6c69487625c569")
        // Every copy of the run shares the release and its commitment.
        let alice = try Self.json(dir + "/copies/alice@example.org.safetensors.weightmark.json")
        #expect((alice["release"] as? [String: Any])?["commitment"] as? String == release["commitment"] as? String)
        let listed = ids + (0..<100).map { "innocent-\($0)" }
        try listed.joined(separator: "\n").write(toFile: dir + "/listed.txt", atomically: true, encoding: .utf8)
        func trace(_ keyArguments: [String]) throws -> (status: Int32, accused: [String], report: [String: Any]) {
            let t = try Fixtures.weightmark(["trace", bob] + keyArguments + ["--reference", dir + "/model.safetensors", "--recipients", dir + "/listed.txt", "--json", "--quiet"])
            let report = try #require(try JSONSerialization.jsonObject(with: Data(t.stdout.utf8)) as? [String: Any], "\(t.stderr)")
            return (t.status, (report["accused"] as? [[String: Any]] ?? []).compactMap { $0["recipient"] as? String }, report)
        }
        let byRelease = try trace(["--key", dir + "/owner.key", "--release", releaseID])
        #expect(byRelease.status == 0 && byRelease.accused == ["bob@example.org"])
        let byManifest = try trace(["--key", dir + "/owner.key", "--manifest", bob + ".weightmark.json"])
        #expect(byManifest.status == 0 && byManifest.accused == ["bob@example.org"])
        let committed = try trace(["--opening", opening, "--manifest", bob + ".weightmark.json"])
        #expect(committed.status == 0 && committed.accused == ["bob@example.org"])
        #expect((committed.report["keyCommitment"] as? [String: Any])?["committed"] as? Bool == true)
        // The owner key alone finds the release in its key store (embed recorded it) and accuses bob.
        let alone = try trace(["--key", dir + "/owner.key"])
        #expect(alone.status == 0 && alone.accused == ["bob@example.org"], "\(alone.report)")
        // Without the store the key file alone still finds it: r1 is among the default ids r1…r16 (17 keys paid for).
        try FileManager.default.removeItem(atPath: dir + "/owner.key.store")
        let lost = try trace(["--key", dir + "/owner.key"])
        #expect(lost.status == 0 && lost.accused == ["bob@example.org"] && lost.report["keysTried"] as? Int == 17, "\(lost.report)")
        // With the default ids turned off, the owner key's own code is all that is read: no one, and a hint.
        let t = try Fixtures.weightmark(["trace", bob, "--key", dir + "/owner.key", "--enumerate-releases", "0", "--reference", dir + "/model.safetensors",
                                         "--recipients", dir + "/listed.txt"])
        #expect(t.status == 1 && t.stderr.contains("--release"), "\(t.stdout)\(t.stderr)")
        // A wrong release id is refused against the manifest, naming it.
        let wrong = try Fixtures.weightmark(["trace", bob, "--key", dir + "/owner.key", "--release", "other", "--manifest", bob + ".weightmark.json",
                                             "--reference", dir + "/model.safetensors", "--recipients", dir + "/listed.txt"])
        #expect(wrong.status == 2 && wrong.stderr.contains("weightmark.json"), "\(wrong.stderr)")
    }
}

import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// Personal copies made by earlier versions must keep tracing, and `--recipients` must write exactly the copies
/// `--recipient` writes one at a time.
///
/// `Golden/personal-copies.json` holds a fixed test key and the SHA-256 of the personal copies tool 0.3 wrote of the
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
    }

    static let goldenURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/personal-copies.json")

    static func sha256(_ path: String) throws -> String {
        let r = try Fixtures.runProcess("/usr/bin/env", ["sha256sum", path])
        return String(r.stdout.prefix(64))
    }

    @Test("a copy made with the owner key (tool 0.3) is reproduced byte for byte and still traces with --key alone", arguments: [DType.f32, .bf16])
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
        #expect(hash == golden.copies[dtype.rawValue], "the owner-key personal copy of the \(dtype.rawValue) fixture changed: copies already handed out would no longer trace")
        try ([golden.recipient] + (0..<100).map { "innocent-\($0)" }).joined(separator: "\n").write(toFile: dir + "/ids.txt", atomically: true, encoding: .utf8)
        let t = try Fixtures.weightmark(["trace", dir + "/copy.safetensors", "--key", dir + "/owner.key", "--reference", dir + "/model.safetensors",
                                         "--recipients", dir + "/ids.txt", "--json", "--quiet"])
        #expect(t.status == 0, "\(t.stdout)\(t.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(t.stdout.utf8)) as? [String: Any])
        #expect((report["accused"] as? [[String: Any]])?.map { $0["recipient"] as? String } == [golden.recipient])
    }
}

import Foundation
import Testing
import WeightMarkTestSupport

/// One release marked, time-stamped and turned into a bundle, shared by the suite (built once, read-only after).
final class EvidenceFixture: Sendable {
    let dir: String
    let tsa: LocalTSA
    var bundle: String { dir + "/bundle" }
    var suspect: String { dir + "/marked.safetensors" }

    static let shared: Result<EvidenceFixture, Error> = Result { try EvidenceFixture() }

    private init() throws {
        dir = Fixtures.temporaryDirectory("evidence")
        tsa = try LocalTSA(dir: dir + "/tsa")
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors")
        try Self.cli(["keygen", "--out", dir + "/owner.key", "--quiet"])
        try Self.cli(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--out", suspect, "--release", "r1",
                      "--strength", "0.005", "--quiet"])
        try Self.cli(["timestamp", dir + "/marked.safetensors.weightmark.json", "--out", dir + "/m.tsq", "--quiet"])
        try tsa.reply(query: dir + "/m.tsq", response: dir + "/m.tsr")
        try Self.cli(["evidence", suspect, "--opening", dir + "/marked.safetensors.opening.json",
                      "--manifest", dir + "/marked.safetensors.weightmark.json", "--reference", dir + "/model.safetensors",
                      "--timestamp", dir + "/m.tsr", "--ca", tsa.ca, "--out", bundle, "--quiet"])
    }

    @discardableResult
    static func cli(_ args: [String], expect status: Int32 = 0) throws -> (status: Int32, stdout: String, stderr: String) {
        let r = try Fixtures.weightmark(args)
        guard r.status == status else { throw SetupError(message: "weightmark \(args.joined(separator: " ")) exited \(r.status): \(r.stdout)\(r.stderr)") }
        return r
    }

    /// A copy of the bundle to tamper with.
    func copyOfBundle(_ label: String) throws -> String {
        let copy = dir + "/tampered-\(label)"
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: bundle, toPath: copy)
        return copy
    }
}

/// Replaces the first occurrence of `old` in a bundle file.
func edit(_ path: String, _ old: String, _ new: String) throws {
    let text = String(decoding: FileManager.default.contents(atPath: path)!, as: UTF8.self)
    guard let r = text.range(of: old) else { throw SetupError(message: "\(old) not in \(path)") }
    Fixtures.write(Array(text.replacingCharacters(in: r, with: new).utf8), to: path)
}

/// The value of `"key" : "…"` in a JSON text.
func jsonString(_ path: String, _ key: String) -> String {
    let text = String(decoding: FileManager.default.contents(atPath: path)!, as: UTF8.self)
    let r = text.range(of: "\"\(key)\" : \"")!
    return String(text[r.upperBound...].prefix { $0 != "\"" })
}

@Suite("Evidence bundles: written, replayed, and every tampered field named")
struct EvidenceBundleTests {
    var f: EvidenceFixture { get throws { try EvidenceFixture.shared.get() } }

    @Test("round trip: the bundle verifies, with a plain summary; secret files are 0600 and outside the release")
    func roundTrip() throws {
        let f = try f
        let r = try EvidenceFixture.cli(["evidence", "--verify", f.bundle])
        #expect(r.stdout.contains("EVIDENCE VALID") && r.stdout.contains("In plain words") && r.stdout.contains("DETECTED"), "\(r.stdout)")
        #expect(r.stdout.contains("The key was fixed at release") && !r.stdout.contains("FAIL"), "\(r.stdout)")
        for file in [f.dir + "/marked.safetensors.opening.json", f.bundle + "/opening.json"] {
            let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as! Int
            #expect(mode == 0o600, "\(file): \(String(mode, radix: 8))")
        }
        let readme = String(decoding: FileManager.default.contents(atPath: f.bundle + "/README.txt")!, as: UTF8.self)
        #expect(readme.contains("committed") && readme.contains("time-stamping authority"))
        let json = try EvidenceFixture.cli(["evidence", "--verify", f.bundle, "--json", "--before", "2999-01-01"])
        #expect(json.stdout.contains("\"valid\" : true") && json.stdout.contains("\"keyCommitted\" : true"), "\(json.stdout)")
    }

    enum Tamper: String, CaseIterable, CustomTestStringConvertible {
        case commitment, nonce, referenceHash, suspectByte, statistic, timestampByte
        var testDescription: String { rawValue }
    }

    @Test("a single altered field makes --verify fail (exit 1) naming it", arguments: Tamper.allCases)
    func tamper(_ t: Tamper) throws {
        let f = try f
        let b = try f.copyOfBundle(t.rawValue)
        var extra: [String] = []
        let expected: String
        switch t {
        case .commitment:
            let c = jsonString(b + "/bundle.json", "commitment")
            try edit(b + "/bundle.json", c, String(c.reversed()))
            expected = "commitment"
        case .nonce:
            let n = jsonString(b + "/opening.json", "nonce")
            try edit(b + "/opening.json", n, String(n.dropFirst()) + (n.first == "0" ? "1" : "0"))
            expected = "nonce"
        case .referenceHash:
            let h = jsonString(b + "/bundle.json", "tensorsSHA256")
            try edit(b + "/bundle.json", "\"tensorsSHA256\" : \"" + h, "\"tensorsSHA256\" : \"" + String(h.reversed()))
            expected = "reference"
        case .suspectByte:
            let copy = f.dir + "/suspect-copy.safetensors"
            try? FileManager.default.removeItem(atPath: copy)
            try FileManager.default.copyItem(atPath: f.suspect, toPath: copy)
            var bytes = Array(FileManager.default.contents(atPath: copy)!)
            bytes[bytes.count - 1000] ^= 0x40
            Fixtures.write(bytes, to: copy)
            extra = ["--suspect", copy]
            expected = "suspect file suspect-copy.safetensors"
        case .statistic:
            let text = String(decoding: FileManager.default.contents(atPath: b + "/report.json")!, as: UTF8.self)
            let r = text.range(of: "\"combinedZ\" : ")!
            let value = String(text[r.upperBound...].prefix { $0 != "," && $0 != "\n" })
            try edit(b + "/report.json", "\"combinedZ\" : " + value, "\"combinedZ\" : \(Double(value)! * 1.01)")
            expected = "combinedZ"
        case .timestampByte:
            var token = Array(FileManager.default.contents(atPath: b + "/timestamp.tsr")!)
            token[token.count / 2] ^= 0x01
            Fixtures.write(token, to: b + "/timestamp.tsr")
            expected = "timestamp"
        }
        let r = try Fixtures.weightmark(["evidence", "--verify", b, "--json"] + extra)
        #expect(r.status == 1, "\(t): \(r.status) \(r.stderr)")
        #expect(r.stdout.contains("\"valid\" : false"), "\(r.stdout)")
        let failed = r.stdout.components(separatedBy: "\"failed\" : [").last?.components(separatedBy: "]").first ?? ""
        #expect(failed.contains("\"\(expected)"), "\(t): failed fields \(failed)")
        let human = try Fixtures.weightmark(["evidence", "--verify", b] + extra)
        #expect(human.status == 1 && human.stdout.contains("EVIDENCE INVALID") && human.stdout.contains(expected), "\(human.stdout)")
    }

    @Test("a timestamp later than --before fails; an earlier one passes")
    func before() throws {
        let f = try f
        let late = try Fixtures.weightmark(["evidence", "--verify", f.bundle, "--before", "2020-01-01", "--json"])
        #expect(late.status == 1 && late.stdout.contains("\"timestamp.before\""), "\(late.stdout)")
        #expect(try Fixtures.weightmark(["evidence", "--verify", f.bundle, "--before", "2999-12-31T00:00:00Z"]).status == 0)
        let notABundle = try Fixtures.weightmark(["evidence", "--verify", f.dir])
        #expect(notABundle.status == 2 && notABundle.stderr.contains("bundle.json"), "\(notABundle.stderr)")
    }

    @Test("detect says whether the key was committed, and cautions when it was not")
    func committedOrNot() throws {
        let f = try f
        let manifest = f.dir + "/marked.safetensors.weightmark.json", opening = f.dir + "/marked.safetensors.opening.json"
        let ref = ["--reference", f.dir + "/model.safetensors"]
        let committed = try EvidenceFixture.cli(["detect", f.suspect, "--opening", opening, "--manifest", manifest, "-q"] + ref)
        #expect(committed.stdout.contains("key committed") && !committed.stdout.contains("CAUTION"), "\(committed.stdout)")
        let byRelease = try EvidenceFixture.cli(["detect", f.suspect, "--key", f.dir + "/owner.key", "--release", "r1", "-q", "--json"] + ref)
        #expect(byRelease.stdout.contains("\"committed\" : false") && byRelease.stdout.contains("a key search could produce this score"), "\(byRelease.stdout)")
        let human = try EvidenceFixture.cli(["detect", f.suspect, "--key", f.dir + "/owner.key", "--manifest", manifest, "-q"] + ref)
        #expect(human.stdout.contains("CAUTION: release r1") && human.stdout.contains("a key search could produce this score"), "\(human.stdout)")
        // The owner key alone finds the release through its key store (embed recorded r1 there), committed by the
        // store's opening; with the search narrowed to the owner key itself (no store, no default ids) it does not.
        let owner = try Fixtures.weightmark(["detect", f.suspect, "--key", f.dir + "/owner.key", "--format", "v2", "-q"] + ref)
        #expect(owner.status == 0 && owner.stdout.contains("best: release r1") && owner.stdout.contains("key committed"), "\(owner.stdout)")
        let elsewhere = Fixtures.temporaryDirectory("owner-key-alone")
        defer { try? FileManager.default.removeItem(atPath: elsewhere) }
        try FileManager.default.copyItem(atPath: f.dir + "/owner.key", toPath: elsewhere + "/owner.key")
        let bare = try Fixtures.weightmark(["detect", f.suspect, "--key", elsewhere + "/owner.key", "--format", "v2", "--enumerate-releases", "0", "-q"] + ref)
        #expect(bare.status == 1, "the owner key itself does not carry a release's mark: \(bare.stdout)")
        // Another release id derives another key, which the manifest refuses.
        let wrong = try Fixtures.weightmark(["detect", f.suspect, "--key", f.dir + "/owner.key", "--release", "r2", "--manifest", manifest, "-q"])
        #expect(wrong.status == 2 && wrong.stderr.contains("release"), "\(wrong.stderr)")
    }

    @Test("models marked without a release are detected with --key alone, flagged as not committed")
    func legacy() throws {
        let f = try f
        let out = f.dir + "/legacy.safetensors"
        try EvidenceFixture.cli(["embed", f.dir + "/model.safetensors", "--key", f.dir + "/owner.key", "--out", out, "--no-release", "--strength", "0.005", "-q", "--force"])
        #expect(!FileManager.default.fileExists(atPath: out + ".opening.json"))
        let r = try EvidenceFixture.cli(["detect", out, "--key", f.dir + "/owner.key", "--reference", f.dir + "/model.safetensors", "-q"])
        #expect(r.stdout.contains("WATERMARK DETECTED") && r.stdout.contains("CAUTION: this key was not committed"), "\(r.stdout)")
    }

    @Test("a bundle made with the owner key and a release id says the key was not committed, and replays")
    func uncommittedBundle() throws {
        let f = try f
        let out = f.dir + "/uncommitted-bundle"
        try? FileManager.default.removeItem(atPath: out)
        try EvidenceFixture.cli(["evidence", f.suspect, "--key", f.dir + "/owner.key", "--release", "r1", "--manifest",
                                 f.dir + "/marked.safetensors.weightmark.json", "--reference", f.dir + "/model.safetensors", "--out", out, "-q"])
        #expect(!FileManager.default.fileExists(atPath: out + "/opening.json"))
        let mode = try FileManager.default.attributesOfItem(atPath: out + "/release-key.json")[.posixPermissions] as! Int
        #expect(mode == 0o600)
        let r = try EvidenceFixture.cli(["evidence", "--verify", out])
        #expect(r.stdout.contains("EVIDENCE VALID") && r.stdout.contains("CAUTION: this key was not committed before the dispute"), "\(r.stdout)")
        let readme = String(decoding: FileManager.default.contents(atPath: out + "/README.txt")!, as: UTF8.self)
        #expect(readme.contains("CAUTION"))
    }

    @Test("evidence refuses a reference that is not the committed original")
    func stagedReference() throws {
        let f = try f
        try Fixtures.writeSmallModel(to: f.dir + "/staged.safetensors", seed: 43)
        let r = try Fixtures.weightmark(["evidence", f.suspect, "--opening", f.dir + "/marked.safetensors.opening.json",
                                         "--manifest", f.dir + "/marked.safetensors.weightmark.json", "--reference", f.dir + "/staged.safetensors",
                                         "--out", f.dir + "/staged-bundle", "-q"])
        #expect(r.status == 2 && r.stderr.contains("committed to the original") && r.stderr.contains("staged.safetensors"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: f.dir + "/staged-bundle"))
    }
}

@Suite("Evidence CLI: refusals and help")
struct EvidenceCommandTests {
    @Test("embed never writes the opening inside the released folder, and never overwrites one without --force")
    func openingPlacement() throws {
        let dir = Fixtures.temporaryDirectory("opening-place")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors")
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key"]).status == 0)
        let inside = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--out", dir + "/out",
                                              "--opening", dir + "/out/opening.json", "-q"])
        #expect(inside.status == 2 && inside.stderr.contains("inside the output folder"), "\(inside.stderr)")
        Fixtures.write(Array("keep".utf8), to: dir + "/o.json")
        let exists = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--out", dir + "/m.safetensors",
                                              "--opening", dir + "/o.json", "-q"])
        #expect(exists.status == 2 && exists.stderr.contains("o.json"), "\(exists.stderr)")
        #expect(FileManager.default.contents(atPath: dir + "/o.json") == Data("keep".utf8))
        #expect(!FileManager.default.fileExists(atPath: dir + "/m.safetensors"))
        let bad = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--out", dir + "/m.safetensors",
                                           "--release", "no spaces", "-q"])
        #expect(bad.status == 2 && bad.stderr.contains("release id"), "\(bad.stderr)")
    }

    @Test("--help of timestamp and evidence documents the exit codes")
    func help() throws {
        // Help wraps at 80 columns: compare with whitespace runs folded.
        func folded(_ s: String) -> String { s.split(whereSeparator: \.isWhitespace).joined(separator: " ") }
        let t = try Fixtures.weightmark(["timestamp", "--help"])
        #expect(t.status == 0 && folded(t.stdout).contains("Exit codes: 0 written / valid, 1 the token does not verify (the field is named), 2 error"), "\(t.stdout)")
        let e = try Fixtures.weightmark(["evidence", "--help"])
        #expect(e.status == 0 && folded(e.stdout).contains("Exit codes: 0 detected / checks hold, 1 not detected / a check fails, 2 error"), "\(e.stdout)")
    }
}

@Suite("Evidence bundles: every file bound by a hash")
struct EvidenceCoverageTests {
    var f: EvidenceFixture { get throws { try EvidenceFixture.shared.get() } }

    /// Replaces one letter or digit near the middle of `path` by another of the same kind (the file stays well formed).
    static func alterOneCharacter(_ path: String) {
        var bytes = Array(FileManager.default.contents(atPath: path)!)
        var i = bytes.count / 2
        while i < bytes.count, !(bytes[i] >= 0x30 && bytes[i] <= 0x39 || bytes[i] >= 0x61 && bytes[i] <= 0x7A) { i += 1 }
        if i == bytes.count { i = bytes.count / 2; bytes[i] ^= 0x01 } else {
            bytes[i] = bytes[i] <= 0x39 ? (bytes[i] == 0x39 ? 0x30 : bytes[i] + 1) : (bytes[i] == 0x7A ? 0x61 : bytes[i] + 1)
        }
        Fixtures.write(bytes, to: path)
    }

    @Test("one character altered in any file of a real bundle (the index's unchecked `created` too), or a file added: verification fails, naming the file")
    func everyFile() throws {
        let f = try f
        let names = try FileManager.default.contentsOfDirectory(atPath: f.bundle).sorted()
        #expect(Set(names).isSuperset(of: ["bundle.json", "manifest.json", "opening.json", "report.json", "README.txt", "timestamp.tsr", "tsa-ca.pem"]), "\(names)")
        for name in names + ["added"] {
            let b = try f.copyOfBundle("file-" + name)
            if name == "added" {
                Fixtures.write(Array("a note slipped in later\n".utf8), to: b + "/NOTES.txt")
            } else if name == "bundle.json" {
                // `created` is shown to readers but recomputed by nothing: only the index's own hash covers it.
                let created = jsonString(b + "/bundle.json", "created")
                try edit(b + "/bundle.json", created, created.replacingOccurrences(of: "T", with: "T0").dropLast(2) + "Z")
            } else {
                Self.alterOneCharacter(b + "/" + name)
            }
            let expected = name == "added" ? "NOTES.txt" : name
            let r = try Fixtures.weightmark(["evidence", "--verify", b, "--json"])
            #expect(r.status == 1, "\(name): exit \(r.status) \(r.stderr)")
            let failed = r.stdout.components(separatedBy: "\"failed\" : [").last?.components(separatedBy: "]").first ?? ""
            #expect(failed.contains("\"\(expected)\""), "\(name): failed checks \(failed)")
        }
        // The untouched bundle still verifies.
        #expect(try Fixtures.weightmark(["evidence", "--verify", f.bundle]).status == 0)
    }
}

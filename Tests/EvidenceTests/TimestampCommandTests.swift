import Foundation
import Testing
import WeightMarkTestSupport

/// `weightmark timestamp` against tokens made by the real `openssl ts` with a throw-away local TSA.
@Suite("RFC 3161 timestamps: requests openssl answers, tokens verified offline")
struct TimestampCommandTests {
    static func setUp(_ label: String) throws -> (dir: String, tsa: LocalTSA) {
        let dir = Fixtures.temporaryDirectory(label)
        let tsa = try LocalTSA(dir: dir + "/tsa")
        Fixtures.write(Array("{\"a manifest\": true}\n".utf8), to: dir + "/m.json")
        return (dir, tsa)
    }

    @Test("our request, openssl's reply: verifies, and openssl ts -verify agrees")
    func roundTrip() throws {
        let (dir, tsa) = try Self.setUp("ts-rt")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let q = try Fixtures.weightmark(["timestamp", dir + "/m.json", "--out", dir + "/q.tsq"])
        #expect(q.status == 0, "\(q.stderr)")
        // openssl parses our DER request and sees the SHA-256 of the file, a nonce and certReq.
        let text = try Fixtures.run(LocalTSA.openssl, ["ts", "-query", "-in", dir + "/q.tsq", "-text"])
        #expect(text.contains("SHA256") || text.contains("sha256"), "\(text)")
        #expect(text.contains("Certificate required: yes") && text.contains("Nonce: 0x"), "\(text)")
        try tsa.reply(query: dir + "/q.tsq", response: dir + "/r.tsr")
        let v = try Fixtures.weightmark(["timestamp", "--verify", dir + "/m.json", dir + "/r.tsr", "--ca", tsa.ca, "--request", dir + "/q.tsq", "--json"])
        #expect(v.status == 0, "\(v.stdout)\(v.stderr)")
        #expect(v.stdout.contains("\"nonceChecked\" : true") && v.stdout.contains("genTime"), "\(v.stdout)")
        _ = try Fixtures.run(LocalTSA.openssl, ["ts", "-verify", "-data", dir + "/m.json", "-in", dir + "/r.tsr", "-CAfile", tsa.ca])
        // A request made by openssl itself works too.
        try LocalTSA.openssl(["ts", "-query", "-data", dir + "/m.json", "-sha256", "-cert", "-out", dir + "/o.tsq"], in: dir)
        try tsa.reply(query: dir + "/o.tsq", response: dir + "/o.tsr")
        #expect(try Fixtures.weightmark(["timestamp", "--verify", dir + "/m.json", dir + "/o.tsr", "--ca", tsa.ca, "--request", dir + "/o.tsq"]).status == 0)
    }

    @Test("another file, another CA, another request, an altered token: exit 1 naming the field")
    func failures() throws {
        let (dir, tsa) = try Self.setUp("ts-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try Fixtures.weightmark(["timestamp", dir + "/m.json", "--out", dir + "/q.tsq"]).status == 0)
        #expect(try Fixtures.weightmark(["timestamp", dir + "/m.json", "--out", dir + "/q2.tsq"]).status == 0)
        try tsa.reply(query: dir + "/q.tsq", response: dir + "/r.tsr")
        Fixtures.write(Array("{\"a manifest\": false}\n".utf8), to: dir + "/other.json")
        let other = try LocalTSA(dir: dir + "/other-ca", caName: "Another CA")
        let token = Array(FileManager.default.contents(atPath: dir + "/r.tsr")!)
        // Flip one byte inside the signed TSTInfo (the serial number area, found after the policy OID).
        let policy: [UInt8] = [0x2B, 0x06, 0x01, 0x04, 0x01, 0x86, 0x8D, 0x1F, 0x01]
        let at = (0..<(token.count - policy.count)).first { Array(token[$0..<($0 + policy.count)]) == policy }!
        var altered = token
        altered[at + policy.count + 40] ^= 0x01
        Fixtures.write(altered, to: dir + "/altered.tsr")
        // The signature is the last field of the token (no unsigned attributes): flip a byte inside it.
        var forged = token
        forged[token.count - 10] ^= 0x01
        Fixtures.write(forged, to: dir + "/forged.tsr")
        let cases: [([String], String)] = [
            (["timestamp", "--verify", dir + "/other.json", dir + "/r.tsr", "--ca", tsa.ca], "messageImprint"),
            (["timestamp", "--verify", dir + "/m.json", dir + "/r.tsr", "--ca", other.ca], "chain"),
            (["timestamp", "--verify", dir + "/m.json", dir + "/r.tsr", "--ca", tsa.ca, "--request", dir + "/q2.tsq"], "nonce"),
            (["timestamp", "--verify", dir + "/m.json", dir + "/altered.tsr", "--ca", tsa.ca], "messageDigest"),
            (["timestamp", "--verify", dir + "/m.json", dir + "/forged.tsr", "--ca", tsa.ca], "signature"),
        ]
        for (args, field) in cases {
            let r = try Fixtures.weightmark(args)
            #expect(r.status == 1 && r.stdout.contains("INVALID") && r.stdout.contains("\"\(field)\""), "\(field): \(r.status) \(r.stdout)\(r.stderr)")
        }
        let missing = try Fixtures.weightmark(["timestamp", "--verify", dir + "/m.json", dir + "/nope.tsr", "--ca", tsa.ca])
        #expect(missing.status == 2 && missing.stderr.contains("nope.tsr"), "\(missing.stderr)")
    }
}

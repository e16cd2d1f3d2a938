import Evidence
import Foundation
import Testing
import Watermarking
import WeightMarkTestSupport

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

/// The commitment recomputed in Python from docs/FORMAT.md alone: the original's tensor hash read from the safetensors
/// file, the canonical parameters from the manifest, C from the opening's values.
@Suite("Commitment recomputed by an independent Python implementation", .enabled(if: Fixtures.oraclesAvailable, "Python oracle venv not installed (make venv)"))
struct CommitmentOracleTests {
    static let script = """
    import hashlib, json, struct, sys
    model, manifest, opening = sys.argv[1:4]
    raw = open(model, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n]); data = raw[8 + n:]
    le64 = lambda v: struct.pack("<Q", v)
    h = hashlib.sha256(b"weightmark tensors v1")
    for name in sorted((k for k in header if k != "__metadata__"), key=lambda k: k.encode()):
        t = header[name]; b = data[t["data_offsets"][0]:t["data_offsets"][1]]
        h.update(le64(len(name.encode())) + name.encode() + le64(len(t["dtype"])) + t["dtype"].encode() + le64(len(t["shape"])))
        for d in t["shape"]: h.update(le64(d))
        h.update(le64(len(b)) + hashlib.sha256(b).digest())
    D = h.digest()
    m = json.load(open(manifest)); o = json.load(open(opening))
    fields = [f"format=v{m['formatVersion']}", "delta=" + struct.pack(">d", m["delta"]).hex(), f"shaping={m['shaping']}",
              f"rank={m['rank']}", f"min-elements={m['selection']['minimumElements']}"]
    fields += [f"include={g}" for g in m["selection"]["include"]] + [f"exclude={g}" for g in m["selection"]["exclude"]]
    params = b"".join(struct.pack("<I", len(f.encode())) + f.encode() for f in fields)
    C = hashlib.sha256(b"weightmark/commitment/v1\\0" + bytes.fromhex(o["releaseSecret"]) + bytes.fromhex(o["nonce"]) + D + params).hexdigest()
    print(json.dumps({"D": D.hex(), "C": C, "manifestC": m["release"]["commitment"], "openingD": o["originalTensorsSHA256"]}))
    """

    @Test("D of the original and C equal what embed wrote in the manifest and the opening")
    func recomputed() throws {
        let dir = Fixtures.temporaryDirectory("commit-oracle")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors")
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key"]).status == 0)
        let e = try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/owner.key", "--out", dir + "/m.safetensors",
                                         "--release", "oracle", "--exclude", "embed_*", "--strength", "0.004", "-q"])
        #expect(e.status == 0, "\(e.stderr)")
        let out = try Fixtures.runPython(Self.script, arguments: [dir + "/model.safetensors", dir + "/m.safetensors.weightmark.json",
                                                                  dir + "/m.safetensors.opening.json"])
        let r = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: String], "\(out)")
        #expect(r["D"] == r["openingD"], "tensor hash: Python \(r["D"] ?? "?"), opening \(r["openingD"] ?? "?")")
        #expect(r["C"] == r["manifestC"], "commitment: Python \(r["C"] ?? "?"), manifest \(r["manifestC"] ?? "?")")
    }
}

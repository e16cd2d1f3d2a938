import Foundation
import Testing
import LinearAlgebra
import TensorIO
import Watermarking
import WeightMarkTestSupport

func hex(_ bytes: [UInt8]) -> String { Fixtures.hex(bytes) }
func unhex(_ s: String) -> [UInt8] { Fixtures.bytes(fromHex: s) }

func goldenURL(_ name: String) -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/\(name)")
}

@Suite("ChaCha20 and key derivation")
struct KeyedGeneratorTests {
    @Test("ChaCha20 matches RFC 8439's block and encryption vectors")
    func rfc8439() throws {
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: goldenURL("rfc8439.json"))) as! [String: Any]
        let block = json["block"] as! [String: Any]
        var c = ChaCha20(key: unhex(block["key"] as! String), nonce: unhex(block["nonce"] as! String),
                         counter: UInt32(block["counter"] as! Int))
        #expect(hex(c.nextBytes(64)) == block["keystream"] as! String)

        let enc = json["encryption"] as! [String: Any]
        var c2 = ChaCha20(key: unhex(enc["key"] as! String), nonce: unhex(enc["nonce"] as! String),
                          counter: UInt32(enc["counter"] as! Int))
        let plaintext = Array((enc["plaintext"] as! String).utf8)
        let stream = c2.nextBytes(plaintext.count)
        #expect(hex(zip(plaintext, stream).map { $0 ^ $1 }) == enc["ciphertext"] as! String)
    }

    @Test("uniforms lie in (0, 1) with mean 1/2; Gaussians have mean 0 and variance 1; signs are balanced")
    func distributions() {
        // n = 200,000: the 6-sigma margins below give a false-failure probability far under 1e-6.
        var g = KeyedGenerator(secret: Array(repeating: 7, count: 32), purpose: "test", tensor: "t", shape: [1])
        let n = 200_000
        var su = 0.0, sg = 0.0, sg2 = 0.0, signs = 0.0
        for _ in 0..<n {
            let u = g.nextUniform()
            #expect(u > 0 && u < 1)
            su += u
            let x = g.nextGaussian()
            sg += x; sg2 += x * x
            signs += Double(g.nextSign())
        }
        let nd = Double(n)
        #expect(abs(su / nd - 0.5) < 6 * (1.0 / 12 / nd).squareRoot())
        #expect(abs(sg / nd) < 6 / nd.squareRoot())
        #expect(abs(sg2 / nd - 1) < 6 * (2 / nd).squareRoot())
        #expect(abs(signs / nd) < 6 / nd.squareRoot())
    }

    @Test("the vectorized Gaussians equal nextGaussian(): doubles within 4 ulp, floats identical, on every code path")
    func vectorizedGaussians() {
        // 300,011 draws (odd, not a multiple of the 128-draw batch) under three keys; max ulp and the float
        // mismatch count are exact properties of these fixed inputs, so the test is deterministic.
        for seed in [UInt8(0), 0x5a, 0xff] {
            let subkey = (0..<32).map { UInt8(truncatingIfNeeded: Int($0) * 37 + Int(seed)) }
            var scalar = KeyedGenerator(subkey: subkey)
            let n = 300_011
            let reference = (0..<n).map { _ in scalar.nextGaussian() }
            let floats = KeyedGenerator.gaussians(subkey: subkey, count: n)
            #expect(zip(reference, floats).allSatisfy { Float($0) == $1 })
            for path in KeyedGenerator.gaussianCodePaths {
                let vector = KeyedGenerator.gaussianDoubles(subkey: subkey, count: n, codePath: path)
                let worst = zip(reference, vector).map { abs($0.bitPattern.distance(to: $1.bitPattern)) }.max() ?? 0
                #expect(worst <= 4, "code path \(path): \(worst) ulp")
                #expect(zip(reference, vector).allSatisfy { Float($0) == Float($1) }, "code path \(path)")
            }
        }
    }

    @Test("subkeys differ by purpose, tensor name and shape; the same inputs give the same stream")
    func separation() {
        let secret = Array(repeating: UInt8(1), count: 32)
        let base = KeyedGenerator.subkey(secret: secret, info: KeyedGenerator.info(purpose: "carrier-A", tensor: "w", shape: [4, 4]))
        #expect(base == KeyedGenerator.subkey(secret: secret, info: KeyedGenerator.info(purpose: "carrier-A", tensor: "w", shape: [4, 4])))
        #expect(base != KeyedGenerator.subkey(secret: secret, info: KeyedGenerator.info(purpose: "carrier-B", tensor: "w", shape: [4, 4])))
        #expect(base != KeyedGenerator.subkey(secret: secret, info: KeyedGenerator.info(purpose: "carrier-A", tensor: "v", shape: [4, 4])))
        #expect(base != KeyedGenerator.subkey(secret: secret, info: KeyedGenerator.info(purpose: "carrier-A", tensor: "w", shape: [2, 8])))
        var other = secret; other[31] ^= 1
        #expect(base != KeyedGenerator.subkey(secret: other, info: KeyedGenerator.info(purpose: "carrier-A", tensor: "w", shape: [4, 4])))
    }

    @Test("carriers are orthonormal and the pattern has norm sqrt(a·b)")
    func carriers() throws {
        let c = try Carriers.derive(secret: Array(repeating: 3, count: 32), tensor: "x", rows: 200, cols: 120, rank: 16)
        let ata = BLAS.matmul(c.a, c.a, transA: .transposed)
        let btb = BLAS.matmul(c.b, c.b, transA: .transposed)
        for i in 0..<16 { for j in 0..<16 {
            #expect(abs(ata[i, j] - (i == j ? 1 : 0)) < 1e-5)
            #expect(abs(btb[i, j] - (i == j ? 1 : 0)) < 1e-5)
        } }
        #expect(c.s.storage.allSatisfy { $0 == 1 || $0 == -1 })
        #expect(abs(c.pattern().frobeniusNorm - 16) < 1e-3)
        // Y of the pattern itself is S.
        let y = c.project(c.pattern())
        for (a, b) in zip(y.storage, c.s.storage) { #expect(abs(a - b) < 1e-4) }
        // Ranks are capped by small dimensions.
        let thin = try Carriers.derive(secret: Array(repeating: 3, count: 32), tensor: "x", rows: 8, cols: 300)
        #expect(thin.a.cols == 8 && thin.b.cols == 32)
    }

    // The key file's mode (0600, never wider at any moment) is checked on `weightmark keygen` itself, in
    // WeightMarkCLITests/KeyFilePermissionTests; this test covers the contents.
    @Test("key files: contents round trip; wrong format, version, secret or id are clear errors")
    func keyFiles() throws {
        let dir = Fixtures.temporaryDirectory("keys")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let key = WatermarkKey.generate()
        let path = dir + "/k.key"
        Fixtures.write(try key.fileContents(), to: path)
        let loaded = try WatermarkKey.load(from: path)
        #expect(loaded.secret == key.secret)
        #expect(loaded.id == key.id)
        #expect(key.id.count == 16)
        #expect(WatermarkKey.generate().secret != key.secret)
        let text = String(decoding: try key.fileContents(), as: UTF8.self)
        let broken = [
            ("missing", nil as String?),
            ("notjson", "hello"),
            ("format", text.replacingOccurrences(of: "weightmark-key", with: "other-key")),
            ("version", text.replacingOccurrences(of: "\"version\" : 1", with: "\"version\" : 9")),
            ("secret", text.replacingOccurrences(of: hex(key.secret), with: "abcd")),
            ("id", text.replacingOccurrences(of: key.id, with: "0000000000000000")),
        ]
        for (label, contents) in broken {
            let p = dir + "/\(label).key"
            if let contents { Fixtures.write(Array(contents.utf8), to: p) }
            do {
                _ = try WatermarkKey.load(from: p)
                Issue.record("\(label): accepted")
            } catch let e as WatermarkError {
                #expect(e.description.contains(p), "\(label): \(e)")
            }
        }
    }
}

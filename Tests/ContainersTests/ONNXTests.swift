import Foundation
import Testing
@testable import TensorIO
import WeightMarkTestSupport

/// ONNX as people publish it: a marked MiniLM exported by torch.onnx.export (as optimum calls it) and quantized by
/// onnxruntime's own quantizers (Tests/Oracles/onnx_export.py); WeightMark must read each and find the mark.
enum ONNXCorpus {
    static let script = Fixtures.packageRoot + "/Tests/Oracles/onnx_export.py"

    struct Corpus {
        var dir: String
        var key: String
        var marked: String
        var markedZ: Double
    }

    static func oracle(_ arguments: [String]) throws -> String {
        guard let python = Fixtures.python else { throw Fixtures.OracleError(message: "no Python oracle: run `make venv`") }
        return try Fixtures.run(python, [script] + arguments)
    }

    static func z(_ stdout: String) -> Double? {
        guard let data = stdout.data(using: .utf8), let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return o["combinedZ"] as? Double
    }

    /// Marks MiniLM, exports it and its unmarked original to ONNX, and quantizes the marked export four ways.
    static let corpus: Result<Corpus, Error> = {
        do {
            guard let minilm = Fixtures.miniLM else { throw Fixtures.OracleError(message: "MiniLM missing: run `make model`") }
            let original = (minilm as NSString).deletingLastPathComponent
            let dir = Fixtures.temporaryDirectory("onnx")
            let key = dir + "/k.key"
            _ = try Fixtures.weightmark(["keygen", "--out", key, "--quiet"])
            let marked = dir + "/marked"
            let e = try Fixtures.weightmark(["embed", original, "--key", key, "--out", marked, "--quiet"])
            guard e.status == 0 else { throw Fixtures.OracleError(message: "embed failed: \(e.stderr)") }
            let d = try Fixtures.weightmark(["detect", marked, "--key", key, "--json", "--quiet"])
            guard let markedZ = z(d.stdout) else { throw Fixtures.OracleError(message: "detect of the marked model: \(d.stderr)") }
            _ = try oracle(["export", marked, dir + "/marked.onnx"])
            _ = try oracle(["export", original, dir + "/original.onnx"])
            _ = try oracle(["dynamic", dir + "/marked.onnx", dir + "/dynamic-int8.onnx"])
            _ = try oracle(["nbits", dir + "/marked.onnx", dir + "/nbits4.onnx", "4", "32"])
            _ = try oracle(["nbits", dir + "/marked.onnx", dir + "/nbits8.onnx", "8", "128"])
            _ = try oracle(["qdq", dir + "/marked.onnx", dir + "/qdq-int8.onnx"])
            _ = try oracle(["external", dir + "/marked.onnx", dir + "/external.onnx"])
            return .success(Corpus(dir: dir, key: key, marked: marked, markedZ: markedZ))
        } catch { return .failure(error) }
    }()
}

@Suite("ONNX models from torch.onnx.export and onnxruntime's quantizers", .serialized,
       .enabled(if: Fixtures.oraclesAvailable && Fixtures.miniLMAvailable, "Python oracle venv or MiniLM not installed"))
struct ONNXTests {
    @Test("each ONNX form of the marked MiniLM is read and detected blind (≥ 0.9 × the safetensors Z) and informed",
          arguments: ["marked", "dynamic-int8", "nbits4", "nbits8", "qdq-int8", "external"])
    func detected(_ name: String) throws {
        let c = try ONNXCorpus.corpus.get()
        let file = c.dir + "/\(name).onnx"
        let original = (Fixtures.miniLM! as NSString).deletingLastPathComponent
        let blind = try Fixtures.weightmark(["detect", file, "--key", c.key, "--json", "--quiet"])
        let informed = try Fixtures.weightmark(["detect", file, "--key", c.key, "--reference", original, "--no-lineage", "--json", "--quiet"])
        let zb = try #require(ONNXCorpus.z(blind.stdout), "\(blind.stderr)")
        let zi = try #require(ONNXCorpus.z(informed.stdout), "\(informed.stderr)")
        print("ONNX \(name): blind Z \(zb) (safetensors \(c.markedZ), \(zb / c.markedZ)×), informed Z \(zi)")
        #expect(blind.status == 0 && informed.status == 0)
        #expect(zb >= 0.9 * c.markedZ)
        let inspect = try Fixtures.weightmark(["inspect", file])
        #expect(inspect.status == 0 && inspect.stdout.contains("ONNX"), "\(inspect.stdout.prefix(400))")
    }

    @Test("the unmarked export is not detected; another key finds nothing in the marked one")
    func notDetected() throws {
        let c = try ONNXCorpus.corpus.get()
        let other = c.dir + "/other.key"
        _ = try Fixtures.weightmark(["keygen", "--out", other, "--quiet"])
        #expect(try Fixtures.weightmark(["detect", c.dir + "/original.onnx", "--key", c.key, "--quiet"]).status == 1)
        #expect(try Fixtures.weightmark(["detect", c.dir + "/nbits4.onnx", "--key", other, "--quiet"]).status == 1)
    }

    @Test("MatMulNBits weights decode as onnxruntime computes them, to two ulps (the node alone, run on the identity)")
    func nbitsExact() throws {
        let c = try ONNXCorpus.corpus.get()
        for name in ["nbits4", "nbits8"] {
            let file = c.dir + "/\(name).onnx"
            let out = try ONNXCorpus.oracle(["dequant", file])
            let o = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
            let row = try #require(o["row0"] as? [Double])
            let model = try ONNXModel(path: file)
            let t = try #require(model.sourceTensors.first { $0.storage.hasPrefix("ONNX MatMulNBits") })
            #expect(t.shape == (o["shape"] as? [Int]))
            let values = try model.decodeFloats(named: t.name)
            let mine = Array(values[0..<t.shape[1]]).map(Double.init)
            // Bit for bit on this machine; onnxruntime's kernels differ by CPU (a fused q·s − z·s rounds differently),
            // so two ulps are allowed.
            let theirs = row.map { Double(Float($0)) }
            let far = zip(mine, theirs).filter { abs($0 - $1) > 2.4e-7 * max(abs($0), abs($1)) }
            print("ONNX \(name): \(zip(mine, theirs).filter { $0 == $1 }.count) of \(mine.count) values equal onnxruntime's bit for bit")
            #expect(far.isEmpty, "\(name): \(far.prefix(3))")
        }
    }

    @Test("malformed ONNX is refused in one line naming the file: truncated, a length past the end, external data outside the folder")
    func malformed() throws {
        let c = try ONNXCorpus.corpus.get()
        let dir = Fixtures.temporaryDirectory("onnx-bad")
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: c.dir + "/nbits4.onnx")))
        Fixtures.write(Array(bytes.prefix(bytes.count / 2)), to: dir + "/truncated.onnx")
        let t = try Fixtures.weightmark(["inspect", dir + "/truncated.onnx"])
        #expect(t.status == 2 && t.stderr.contains("truncated.onnx") && t.stderr.split(separator: "\n").count == 1, "\(t.stderr)")
        // External data pointing out of the model's folder.
        let head = [UInt8](try Data(contentsOf: URL(fileURLWithPath: c.dir + "/external.onnx")))
        let location = Array((URL(fileURLWithPath: c.dir + "/external.onnx").lastPathComponent + ".data").utf8)
        // Same length as the real location so the protobuf stays well formed: "../" then padding of "x".
        var evil = Array("../".utf8) + [UInt8](repeating: UInt8(ascii: "x"), count: max(0, location.count - 3))
        evil = Array(evil.prefix(location.count))
        var patched = head
        var i = 0, replaced = 0
        while i + location.count <= patched.count {
            if Array(patched[i..<(i + location.count)]) == location { patched.replaceSubrange(i..<(i + location.count), with: evil); replaced += 1; i += location.count } else { i += 1 }
        }
        try #require(replaced > 0)
        Fixtures.write(patched, to: dir + "/escape.onnx")
        let e = try Fixtures.weightmark(["detect", dir + "/escape.onnx", "--key", c.key])
        #expect(e.status == 2 && e.stderr.contains("not a relative path inside the model's folder"), "\(e.stderr)")
        // Random bytes after a valid-looking ModelProto start.
        Fixtures.write([0x08, 0x07, 0x3A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F] + [UInt8](repeating: 0xAB, count: 64), to: dir + "/garbage.onnx")
        let g = try Fixtures.weightmark(["inspect", dir + "/garbage.onnx"])
        #expect(g.status == 2 && g.stderr.contains("garbage.onnx"), "\(g.stderr)")
    }
}

@Suite("PyTorch quantized state dicts", .enabled(if: Fixtures.oraclesAvailable, "Python oracle venv not installed"))
struct PyTorchQuantizedTests {
    @Test("a quantize_dynamic state dict is named as such in one line that says how to get it read, never executed")
    func dynamicInt8() throws {
        let python = try #require(Fixtures.python)
        let dir = Fixtures.temporaryDirectory("pt-dyn")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try Fixtures.run(python, ["-W", "ignore", "-c", """
            import sys, torch
            torch.manual_seed(0)
            m = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256))
            q = torch.ao.quantization.quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)
            torch.save(q.state_dict(), sys.argv[1])
            """, dir + "/dyn.pt"])
        _ = try Fixtures.weightmark(["keygen", "--out", dir + "/k.key", "--quiet"])
        for command in [["inspect", dir + "/dyn.pt"], ["detect", dir + "/dyn.pt", "--key", dir + "/k.key"]] {
            let r = try Fixtures.weightmark(command)
            #expect(r.status == 2 && r.stderr.contains("a PyTorch quantized state dict") && r.stderr.contains("ONNX"), "\(r.stderr)")
            #expect(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1, "\(r.stderr)")
        }
    }
}

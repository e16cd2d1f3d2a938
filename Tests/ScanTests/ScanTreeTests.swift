import Evidence
import Foundation
import Scanning
import Watermarking
import Testing
import TensorIO
import WeightMarkTestSupport

/// The generated tree's folder (six MiniLM-sized copies, ~600 MB), removed when the test process exits.
nonisolated(unsafe) private var scanTreeWork: String?

/// `weightmark scan` over a generated tree of leaked, clean and broken files: the exact hits; the same result from
/// shards run as separate processes with each batch engine's variables, and from a real Dask LocalCluster; and
/// `combine` refusing an incomplete shard set.
@Suite("scan: a generated tree, sharded and through Dask", .serialized,
       .enabled(if: Fixtures.oraclesAvailable && Fixtures.miniLMAvailable, "Python oracle venv or MiniLM not installed (make venv model)"))
struct ScanTreeTests {
    struct Tree: Sendable {
        var root: String
        var keyA: String
        var keyB: String
        var keyAId: String
        /// Paths (as scan reports them) that carry key A.
        var expectedHits: Set<String>
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    static func cli(_ arguments: [String], env: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
        var e = ProcessInfo.processInfo.environment
        for k in ["JOB_COMPLETION_INDEX", "WEIGHTMARK_SHARDS", "AWS_BATCH_JOB_ARRAY_INDEX", "AWS_BATCH_JOB_ARRAY_SIZE",
                  "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT"] { e[k] = nil }
        for (k, v) in env { e[k] = v }
        return try Fixtures.runProcess(Fixtures.weightmarkExecutable, arguments, environment: e)
    }

    static func must(_ arguments: [String]) throws {
        let r = try cli(arguments)
        guard r.status == 0 else { throw Failure(description: "weightmark \(arguments.joined(separator: " ")) exited \(r.status): \(r.stderr)") }
    }

    /// The tree, built once: MiniLM marked with key A as safetensors, as Q8_0 GGUF, renamed and transposed, as a
    /// PyTorch checkpoint, renamed to .txt and inside a zip inside a tar; MiniLM unmarked and marked with a key
    /// not scanned for; a truncated copy, a model too small to carry a mark, junk, and a symbolic-link loop.
    static let tree: Result<Tree, any Error> = Result {
        let work = Fixtures.temporaryDirectory("scan")
        // Written once here, before any test reads the tree; read only by the exit handler.
        scanTreeWork = work
        atexit { if let w = scanTreeWork { try? FileManager.default.removeItem(atPath: w) } }
        let root = work + "/tree"
        let fm = FileManager.default
        for d in ["hub", "wild/pt", "misc", "archives", "stage"] { try fm.createDirectory(atPath: root + "/" + d, withIntermediateDirectories: true) }
        let original = ((Fixtures.miniLM ?? "") as NSString).deletingLastPathComponent
        let keyA = work + "/a.key", keyB = work + "/b.key", keyC = work + "/c.key"
        // Fixed keys, so the tree (and what the path-keyed sample reads) is the same in every run. These keys made
        // the renamed, transposed copy's sample read as stored before scan also read v2 samples transposed.
        for (n, k) in [keyA, keyB, keyC].enumerated() {
            try WatermarkKey(secret: (0..<32).map { UInt8(truncatingIfNeeded: $0 * 37 + 11 * n + 1) }).save(to: k)
        }
        // Key B's owner has a key store with no release in it (key A's and C's get theirs from embed): each key file
        // then stands for its owner key and its recorded releases only, not for the default ids a lost store enumerates.
        try KeyStore(keyPath: keyB).create()
        let marked = root + "/hub/marked"
        try must(["embed", original, "--key", keyA, "--out", marked, "--no-release", "--quiet"])
        try must(["embed", original, "--key", keyC, "--out", root + "/hub/other-key", "--no-release", "--quiet"])
        try fm.createDirectory(atPath: root + "/hub/original", withIntermediateDirectories: true)
        try fm.copyItem(atPath: Fixtures.miniLM!, toPath: root + "/hub/original/model.safetensors")
        let markedFile = marked + "/model.safetensors"
        try must(["convert", marked, "--type", "Q8_0", "--out", root + "/hub/q8.gguf", "--quiet"])
        // Renamed and transposed: every tensor gets a meaningless name and every matrix is stored transposed.
        let m = try SafetensorsModel(path: markedFile)
        var tensors: [OutputTensor] = []
        for (k, t) in m.tensors.enumerated() where t.dtype.isSupportedFloat {
            var v = try m.floats(of: t), shape = t.shape
            if shape.count == 2 {
                let (r, c) = (shape[0], shape[1])
                var tr = [Float](repeating: 0, count: v.count)
                for i in 0..<r { for j in 0..<c { tr[j * r + i] = v[i * c + j] } }
                v = tr; shape = [c, r]
            }
            tensors.append(OutputTensor(name: "t\(k)", dtype: .f32, shape: shape, bytes: FloatConversion.encode(v, as: .f32)))
        }
        try SafetensorsWriter.write(tensors, metadata: [], to: root + "/wild/renamed-transposed.safetensors", overwrite: true)
        _ = try Fixtures.runPython("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
                                   arguments: [Fixtures.packageRoot + "/scripts/oracles/torch_layout.py", "from-safetensors", markedFile,
                                               root + "/wild/pt/pytorch_model.bin"])
        try fm.copyItem(atPath: markedFile, toPath: root + "/misc/notes.txt")
        let whole = try Data(contentsOf: URL(fileURLWithPath: markedFile))
        try whole.prefix(whole.count / 3).write(to: URL(fileURLWithPath: root + "/misc/truncated.safetensors"))
        try Fixtures.writeSmallModel(to: root + "/misc/small.safetensors", shapes: [("norm.weight", [256]), ("tiny.weight", [64, 64])])
        for i in 0..<20 { Fixtures.write(Array("not a model \(i)\n".utf8), to: root + "/misc/junk-\(i).txt") }
        Fixtures.write((0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 7) }, to: root + "/misc/random.bin")
        // A zip (deflated) holding the GGUF, inside a tar: opened two levels deep.
        _ = try Fixtures.runPython("""
            import sys, tarfile, zipfile
            stage, gguf, out = sys.argv[1:4]
            with zipfile.ZipFile(stage + '/inner.zip', 'w', zipfile.ZIP_DEFLATED) as z:
                z.writestr('README', 'weights below')
                z.write(gguf, 'models/model.gguf')
            with tarfile.open(out, 'w') as t:
                t.add(stage + '/inner.zip', 'bundle/inner.zip')
            """, arguments: [work, root + "/hub/q8.gguf", root + "/archives/outer.tar"])
        try fm.removeItem(atPath: root + "/stage")
        try fm.createSymbolicLink(atPath: root + "/misc/loop", withDestinationPath: "..")
        let detected = try cli(["detect", markedFile, "--key", keyA, "--json", "--quiet"])
        guard let report = try JSONSerialization.jsonObject(with: Data(detected.stdout.utf8)) as? [String: Any],
              let keyAId = report["keyId"] as? String else { throw Failure(description: "detect: \(detected.stderr)") }
        return Tree(root: root, keyA: keyA, keyB: keyB, keyAId: keyAId, expectedHits: [
            markedFile, root + "/hub/q8.gguf", root + "/wild/renamed-transposed.safetensors", root + "/wild/pt/pytorch_model.bin",
            root + "/misc/notes.txt", root + "/archives/outer.tar!bundle/inner.zip!models/model.gguf",
        ])
    }

    static func scanArguments(_ t: Tree) -> [String] {
        ["scan", t.root, "--key", t.keyA, "--key", t.keyB, "--family-models", "1000", "--quiet"]
    }

    /// Records without what legitimately differs between runs (timing, shard label), in path order.
    static func comparable(_ records: [ScanRecord]) -> [ScanRecord] {
        records.map { var r = $0; r.ms = 0; r.shard = ""; return r }.sorted { $0.path < $1.path }
    }

    /// The unsharded scan, run once and shared.
    static let whole: Result<(status: Int32, file: String), any Error> = Result {
        let t = try tree.get()
        let r = try cli(scanArguments(t))
        let path = (t.root as NSString).deletingLastPathComponent + "/whole.jsonl"
        try Data(r.stdout.utf8).write(to: URL(fileURLWithPath: path))
        return (r.status, path)
    }

    @Test("exact hits: every leaked copy of key A (renamed, transposed, GGUF, PyTorch, .txt, zip in tar) and nothing else; unreadable never clean")
    func exactHits() throws {
        let t = try Self.tree.get()
        let w = try Self.whole.get()
        #expect(w.status == 0, "a hit is found: exit 0")
        let shard = try ScanShardFile(path: w.file)
        let byPath = Dictionary(shard.records.map { ($0.path, $0) }, uniquingKeysWith: { a, _ in a })
        let hits = Set(shard.records.filter { !$0.hits.isEmpty }.map(\.path))
        #expect(hits == t.expectedHits, "unexpected: \(hits.subtracting(t.expectedHits)), missed: \(t.expectedHits.subtracting(hits))")
        for r in shard.records where !r.hits.isEmpty {
            #expect(r.hits.allSatisfy { $0.keyId == t.keyAId && $0.familywiseP <= 1e-6 }, "\(r.path): \(r.hits)")
        }
        #expect(byPath[t.root + "/hub/original/model.safetensors"]?.status == .ok)
        #expect(byPath[t.root + "/hub/other-key/model.safetensors"]?.status == .ok)
        #expect(byPath[t.root + "/misc/truncated.safetensors"]?.status == .error)
        #expect(byPath[t.root + "/misc/small.safetensors"]?.status == .skipped)
        #expect(byPath[t.root + "/misc/loop"]?.status == .skipped)
        #expect(!shard.records.contains { $0.path.contains("junk-") || $0.path.hasSuffix("random.bin") || $0.path.hasSuffix("tokenizer.json") })
        #expect(shard.trailer.nonModelFiles >= 21)
        // Triage: models decided from their sample read well under their size. (A sample Z of 3 or more below the
        // threshold reads the whole model: for one model that happens with probability ~1e-2, for all tested
        // MiniLM copies at once below 1e-12, so at least one must have been decided from its sample.)
        let sampleOnly = shard.records.filter { $0.status == .ok && !$0.scores.isEmpty && !$0.scores.contains { $0.stage == "full" } }
        #expect(!sampleOnly.isEmpty)
        for r in sampleOnly { #expect(Double(r.bytesRead) < 0.6 * Double(r.bytes), "\(r.path): read \(r.bytesRead) of \(r.bytes)") }
        let markedRecord = try #require(byPath[t.root + "/hub/marked/model.safetensors"])
        // The printed re-check command confirms the hit on its own.
        let recheck = markedRecord.hits[0].recheck.replacingOccurrences(of: "weightmark detect", with: "'\(Fixtures.weightmarkExecutable)' detect")
        let sh = try Fixtures.runProcess("/bin/sh", ["-c", recheck + " --quiet"])
        #expect(sh.status == 0, "re-check: \(recheck): \(sh.stdout) \(sh.stderr)")
    }

    @Test("shards 0..2 as separate processes under Kubernetes, AWS Batch and Slurm variables reproduce the unsharded result; combine refuses incomplete sets")
    func shardsReproduce() throws {
        let t = try Self.tree.get()
        let w = try Self.whole.get()
        let dir = (t.root as NSString).deletingLastPathComponent
        let engines: [[String: String]] = [
            ["JOB_COMPLETION_INDEX": "0", "WEIGHTMARK_SHARDS": "3"],
            ["AWS_BATCH_JOB_ARRAY_INDEX": "1", "AWS_BATCH_JOB_ARRAY_SIZE": "3"],
            ["SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"],
        ]
        var files: [String] = []
        for (i, env) in engines.enumerated() {
            let r = try Self.cli(Self.scanArguments(t) + ["--shard", "auto"], env: env)
            #expect([0, 1, 2, 3].contains(r.status), "\(r.stderr)")
            let f = dir + "/shard-\(i).jsonl"
            try Data(r.stdout.utf8).write(to: URL(fileURLWithPath: f))
            #expect(try ScanShardFile(path: f).trailer.shard == "\(i)/3")
            files.append(f)
        }
        let combined = try Self.cli(["combine"] + files + ["--json"])
        #expect(combined.status == 0, "\(combined.stderr)")
        let merged = try JSONDecoder().decode(ScanMerge.self, from: Data(combined.stdout.utf8))
        let unsharded = try ScanShardFile(path: w.file).records
        #expect(Self.comparable(merged.records) == Self.comparable(unsharded))
        #expect(merged.records.filter { !$0.hits.isEmpty }.count == t.expectedHits.count)

        // Missing, duplicated and truncated shards: refused with exit 3.
        #expect(try Self.cli(["combine", files[0], files[1]]).status == 3)
        #expect(try Self.cli(["combine", files[0], files[1], files[2], files[1]]).status == 3)
        let cut = dir + "/shard-1-cut.jsonl"
        let lines = try String(contentsOfFile: files[1], encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        try (lines.dropFirst().joined(separator: "\n")).write(toFile: cut, atomically: true, encoding: .utf8)
        let refused = try Self.cli(["combine", files[0], cut, files[2]])
        #expect(refused.status == 3 && refused.stderr.contains("shard-1-cut.jsonl"), "\(refused.stderr)")
    }

    @Test("a real Dask LocalCluster running the shards gives the same merged result")
    func daskEngine() throws {
        let t = try Self.tree.get()
        let w = try Self.whole.get()
        let dir = (t.root as NSString).deletingLastPathComponent + "/dask"
        let out = try Fixtures.runPython("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
                                         arguments: [Fixtures.packageRoot + "/Tests/ScanTests/dask_scan.py", "--weightmark", Fixtures.weightmarkExecutable,
                                                     "--shards", "3", "--out", dir, "--"] + Array(Self.scanArguments(t).dropFirst()))
        let merged = try JSONDecoder().decode(ScanMerge.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/merged.json")))
        #expect(out.contains("combine exit 0"), "\(out)")
        #expect(Self.comparable(merged.records) == Self.comparable(try ScanShardFile(path: w.file).records))
    }

    @Test("limits and mistakes: a time limit reports timeout (exit 3), --max-bytes skips, bad shard settings are refused with the fix")
    func limitsAndMistakes() throws {
        let t = try Self.tree.get()
        let marked = t.root + "/hub/marked/model.safetensors"
        let timedOut = try Self.cli(["scan", marked, "--key", t.keyB, "--timeout", "0.000001", "--quiet"])
        #expect(timedOut.status == 3, "\(timedOut.stderr)")
        let timedRecord = try JSONDecoder().decode(ScanRecord.self, from: Data(timedOut.stdout.split(separator: "\n")[0].utf8))
        #expect(timedRecord.status == .timeout && timedRecord.hits.isEmpty)

        let capped = try Self.cli(["scan", marked, "--key", t.keyA, "--max-bytes", "1000000", "--quiet"])
        #expect(capped.status == 1, "a skipped model is not a hit: \(capped.stderr)")
        let cappedRecord = try JSONDecoder().decode(ScanRecord.self, from: Data(capped.stdout.split(separator: "\n")[0].utf8))
        #expect(cappedRecord.status == .skipped && cappedRecord.reason?.contains("--max-bytes") == true)

        for (args, env, mention) in [
            (["--shard", "auto"], [String: String](), "JOB_COMPLETION_INDEX"),
            (["--shard", "auto"], ["JOB_COMPLETION_INDEX": "2"], "WEIGHTMARK_SHARDS"),
            (["--shard", "auto"], ["AWS_BATCH_JOB_ARRAY_INDEX": "4", "AWS_BATCH_JOB_ARRAY_SIZE": "4"], "outside"),
            (["--shard", "3/3"], [:], "--shard must be i/N"),
        ] {
            let r = try Self.cli(["scan", marked, "--key", t.keyA] + args, env: env)
            #expect(r.status == 2 && r.stderr.contains(mention) && r.stdout.isEmpty, "\(args) \(env): \(r.status) \(r.stderr)")
        }
    }
}

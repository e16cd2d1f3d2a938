import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// Regressions for [hardening-2], each rebuilt from its reproduction and run through the real executable.
@Suite("Hardening, round two")
struct HardeningTwoTests {
    /// The owner-key tests' 7.7M-weight model: embed's default strength is detected blind (expected Z ≈ 13).
    static var blindShapes: [(String, [Int])] { OwnerKeyTests.blindShapes }

    @Test("an output that is, contains or lies inside the input is refused, with or without --force; --force replaces only an earlier embed's output")
    func outputsNeverOverlapInputs() throws {
        let dir = Fixtures.temporaryDirectory("h2-paths")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let parent = dir + "/parent"
        try FileManager.default.createDirectory(atPath: parent + "/model", withIntermediateDirectories: true)
        try Fixtures.writeSmallModel(to: parent + "/model/model.safetensors")
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key", "--quiet"]).status == 0)
        let before = FileManager.default.contents(atPath: parent + "/model/model.safetensors")
        for (out, force) in [(parent, true), (parent, false), (parent + "/model/marked", false), (parent + "/model", true), (parent + "/./model/", true)] {
            let r = try Fixtures.weightmark(["embed", parent + "/model", "--key", dir + "/k.key", "--out", out, "--quiet"] + (force ? ["--force"] : []))
            #expect(r.status == 2 && r.stderr.contains("input"), "--out \(out): \(r.status) \(r.stderr)")
        }
        // A symbolic link to the parent is the parent.
        try FileManager.default.createSymbolicLink(atPath: dir + "/alias", withDestinationPath: parent)
        let viaLink = try Fixtures.weightmark(["embed", parent + "/model", "--key", dir + "/k.key", "--out", dir + "/alias", "--force", "--quiet"])
        #expect(viaLink.status == 2, "\(viaLink.stderr)")
        #expect(FileManager.default.contents(atPath: parent + "/model/model.safetensors") == before, "the input is untouched")
        for command in [["attack", parent + "/model", "--out", parent, "--attack", "noise:sigma=0.1"], ["convert", parent + "/model", "--to", "gguf", "--out", parent + "/model/x.gguf"]] {
            let r = try Fixtures.weightmark(command + ["--force", "--quiet"])
            #expect(r.status == 2 && r.stderr.contains("input"), "\(command[0]): \(r.stderr)")
        }
        // --force over something embed did not write (no manifest beside it) is refused; the file stays.
        Fixtures.write(Array("my notes".utf8), to: dir + "/notes.safetensors")
        let notMine = try Fixtures.weightmark(["embed", parent + "/model", "--key", dir + "/k.key", "--out", dir + "/notes.safetensors", "--force", "--quiet"])
        #expect(notMine.status == 2 && notMine.stderr.contains("not an earlier output of embed"), "\(notMine.stderr)")
        #expect(FileManager.default.contents(atPath: dir + "/notes.safetensors") == Data("my notes".utf8))
        // An earlier embed's output is replaced.
        #expect(try Fixtures.weightmark(["embed", parent + "/model", "--key", dir + "/k.key", "--out", dir + "/marked", "--quiet"]).status == 0)
        #expect(try Fixtures.weightmark(["embed", parent + "/model", "--key", dir + "/k.key", "--out", dir + "/marked", "--force", "--quiet"]).status == 0)
    }

    @Test("scan's recheck lines for archive members, pasted into a shell, run nothing a hostile member name says and re-detect the member")
    func recheckLinesAreInert() throws {
        let python = try #require(Fixtures.python, "no Python oracle: run `make venv` or set WEIGHTMARK_PYTHON")
        let dir = Fixtures.temporaryDirectory("h2-recheck")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors", shapes: Self.blindShapes)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key", "--quiet"]).status == 0)
        #expect(try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/k.key", "--out", dir + "/marked.safetensors", "--quiet"]).status == 0)
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        let hostile = "--checkpoint-action=exec=touch PWNED"
        _ = try Fixtures.run(python, ["-c", """
            import sys, tarfile, zipfile
            src, tree, hostile = sys.argv[1], sys.argv[2], sys.argv[3]
            t = tarfile.open(tree + "/a.tar", "w")
            t.add(src, arcname=hostile)
            t.close()
            z = zipfile.ZipFile(tree + "/b.zip", "w")
            z.writestr("-x m[1].bin", open(src, "rb").read())
            z.writestr("-x m1.bin", b"not a model")
            z.close()
            """, dir + "/marked.safetensors", tree, hostile])
        let scan = try Fixtures.weightmark(["scan", tree, "--key", dir + "/k.key", "--quiet"])
        #expect(scan.status == 0, "\(scan.stderr)")
        var rechecks: [String] = []
        for line in scan.stdout.split(separator: "\n") {
            guard let r = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let hits = r["hits"] as? [[String: Any]] else { continue }
            rechecks += hits.compactMap { $0["recheck"] as? String }
        }
        #expect(rechecks.count == 2, "a hit in each archive: \(scan.stdout)")
        for line in rechecks {
            let work = Fixtures.temporaryDirectory("h2-paste")
            defer { try? FileManager.default.removeItem(atPath: work) }
            let binary = (Fixtures.weightmarkExecutable as NSString).deletingLastPathComponent
            var env = ProcessInfo.processInfo.environment
            env["PATH"] = binary + ":" + (env["PATH"] ?? "/usr/bin:/bin")
            let r = try Fixtures.runProcess("/bin/sh", ["-c", "cd '\(work)' && " + line], environment: env)
            #expect(r.status == 0, "\(line): \(r.stdout)\(r.stderr)")
            #expect(!FileManager.default.fileExists(atPath: work + "/PWNED") && !FileManager.default.fileExists(atPath: dir + "/PWNED"), "\(line) ran the member name")
        }
    }

    @Test("evidence --verify computes the verdict at the verifier's threshold: a bundle whose author chose --alpha 0.9 is not valid evidence of detection")
    func verifierControlsAlpha() throws {
        let dir = Fixtures.temporaryDirectory("h2-alpha")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors")
        // A fixed key, so the score is the same in every run: the small model's blind Z is far below the 1e-6 threshold.
        let golden = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Golden/personal-copies.json"))) as? [String: Any]
        try (try #require(golden?["keyFile"] as? String)).write(toFile: dir + "/k.key", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: dir + "/k.key")
        #expect(try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/k.key", "--out", dir + "/marked.safetensors", "--quiet"]).status == 0)
        let w = try Fixtures.weightmark(["evidence", dir + "/marked.safetensors", "--opening", dir + "/marked.safetensors.opening.json",
                                         "--manifest", dir + "/marked.safetensors.weightmark.json", "--alpha", "0.9", "--out", dir + "/case", "--quiet"])
        try #require(w.stdout.contains("WATERMARK DETECTED"), "at the author's 0.9 the weak score is 'detected': \(w.stdout)")
        let v = try Fixtures.weightmark(["evidence", "--verify", dir + "/case", "--json"])
        #expect(v.status == 1 && v.stdout.contains("\"detected\""), "the verifier's 1e-6 does not detect it: \(v.stdout)")
        // A verifier who accepts 0.9 too gets a valid bundle: the threshold is the verifier's choice, not the author's.
        #expect(try Fixtures.weightmark(["evidence", "--verify", dir + "/case", "--alpha", "0.9"]).status == 0)
    }

    @Test("combine refuses statistics no detector writes (1e308, 1e-300, zero norms) and impossible parts, without a crash")
    func combineRefusesImpossibleReports() throws {
        let dir = Fixtures.temporaryDirectory("h2-combine")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors")
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key", "--quiet"]).status == 0)
        for i in 0..<2 {
            _ = try Fixtures.weightmark(["detect", dir + "/model.safetensors", "--key", dir + "/k.key", "--release", "r1", "--format", "v1", "--part", "\(i)/2",
                                         "--enumerate-releases", "0", "--report", dir + "/p\(i).json", "--quiet"])
        }
        let text = try String(contentsOfFile: dir + "/p0.json", encoding: .utf8)
        func variant(_ name: String, _ edit: (String) -> String) -> String {
            let path = dir + "/" + name + ".json"
            Fixtures.write(Array(edit(text).utf8), to: path)
            return path
        }
        func replaceFirst(_ s: String, _ pattern: String, _ with: String) -> String {
            guard let r = s.range(of: pattern, options: .regularExpression) else { return s }
            return s.replacingCharacters(in: r, with: with)
        }
        let cases = [
            variant("huge", { replaceFirst($0, "\"correlation\" : [-0-9.e]+", "\"correlation\" : 1e308") }),
            variant("tiny", { replaceFirst($0, "\"norm\" : [-0-9.e]+", "\"norm\" : 1e-300") }),
            variant("zero", { replaceFirst($0, "\"norm\" : [-0-9.e]+", "\"norm\" : 0") }),
            variant("part7of0", { replaceFirst($0, "\"count\" : 2", "\"count\" : 0").replacingOccurrences(of: "\"index\" : 0", with: "\"index\" : 7") }),
        ]
        for c in cases {
            let r = try Fixtures.weightmark(["combine", c, dir + "/p1.json"])
            #expect(r.status == 2 && r.stderr.split(separator: "\n").count == 1, "\(c): \(r.status) \(r.stderr)")
        }
        let twice = try Fixtures.weightmark(["combine", dir + "/p0.json", dir + "/p0.json"])
        #expect(twice.status == 2, "\(twice.stderr)")
    }

    @Test("a FIFO is refused before it is opened (no hang); control characters in file names are escaped in what scan prints")
    func fifosAndControlCharacters() throws {
        let dir = Fixtures.temporaryDirectory("h2-fifo")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(mkfifo(dir + "/pipe.safetensors", 0o600) == 0)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key", "--quiet"]).status == 0)
        for command in [["detect", dir + "/pipe.safetensors", "--key", dir + "/k.key"], ["inspect", dir + "/pipe.safetensors"]] {
            let r = try Fixtures.weightmark(command)
            #expect(r.status == 2 && r.stderr.contains("FIFO"), "\(command[0]): \(r.stderr)")
        }
        // A marked model whose file name carries an escape sequence and a carriage return.
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors", shapes: Self.blindShapes)
        #expect(try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/k.key", "--out", dir + "/marked.safetensors", "--quiet"]).status == 0)
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: dir + "/marked.safetensors", toPath: tree + "/evil\u{1B}]0;owned\u{07}\rHIT fake.safetensors")
        let scan = try Fixtures.weightmark(["scan", tree, "--key", dir + "/k.key"])
        #expect(scan.status == 0, "\(scan.stderr)")
        #expect(!scan.stderr.contains("\u{1B}]0;") && !scan.stderr.contains("\r") && scan.stderr.contains("\\x1B]0;owned\\x07\\x0DHIT"), "\(scan.stderr.debugDescription)")
    }

    @Test("under a 4 GB address-space cap, a deflate-bomb .npz and a zero-stride PyTorch tensor get exit 2 and one line from detect and inspect --stats; scan records them as errors and still reports the marked model next to them")
    func bombsAndStrides() throws {
        let python = try #require(Fixtures.python, "no Python oracle: run `make venv` or set WEIGHTMARK_PYTHON")
        let dir = Fixtures.temporaryDirectory("h2-bombs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        // 1.25 GiB of zeros in a 1.3 MB .npz member (the cap leaves 1 GiB to inflate), and a 2^40-element view of a
        // 65,536-float storage (strides 0) in a 260 KB .pth.
        _ = try Fixtures.run(python, ["-c", """
            import sys, zipfile, numpy as np, torch
            tree = sys.argv[1]
            with zipfile.ZipFile(tree + "/bomb.npz", "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as z:
                with z.open("w.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (20480, 16384)})
                    chunk = bytes(1 << 24)
                    for _ in range(80):
                        f.write(chunk)
            torch.save({"w": torch.zeros(65536).as_strided((1 << 20, 1 << 20), (0, 0))}, tree + "/stride0.pth")
            """, tree])
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors", shapes: Self.blindShapes)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key", "--quiet"]).status == 0)
        #expect(try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/k.key", "--out", tree + "/marked.safetensors", "--quiet"]).status == 0)
        func capped(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
            let quoted = ([Fixtures.weightmarkExecutable] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
            return try Fixtures.runProcess("/bin/sh", ["-c", "ulimit -v 4194304 && exec " + quoted])
        }
        for file in ["bomb.npz", "stride0.pth"] {
            for command in [["detect", tree + "/" + file, "--key", dir + "/k.key"], ["inspect", tree + "/" + file, "--stats"]] {
                let r = try capped(command)
                #expect(r.status == 2 && r.stderr.split(separator: "\n").count == 1, "\(command): \(r.status) \(r.stderr)")
            }
        }
        // Without a cap too: scan inflates at most 512 MiB per member, whatever the machine's memory.
        let uncapped = try Fixtures.weightmark(["scan", tree, "--key", dir + "/k.key", "--quiet"])
        #expect(uncapped.status == 0 && uncapped.stdout.contains("\"status\":\"error\""), "\(uncapped.stdout.prefix(600))")
        let scan = try capped(["scan", tree, "--key", dir + "/k.key", "--quiet"])
        #expect(scan.status == 0, "a hit is found despite the bad files: \(scan.stderr)")
        var statuses: [String: String] = [:]
        for line in scan.stdout.split(separator: "\n") {
            if let r = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let path = r["path"] as? String {
                statuses[(path as NSString).lastPathComponent] = (r["hits"] as? [Any]).map { $0.isEmpty ? r["status"] as? String ?? "" : "hit" }
            }
        }
        #expect(statuses == ["bomb.npz": "error", "stride0.pth": "error", "marked.safetensors": "hit"], "\(statuses)")
        #expect(scan.stdout.contains("\"trailer\"") || scan.stdout.split(separator: "\n").last?.contains("modelsTested") == true, "the trailer is written")
    }

    @Test("SIGTERM and SIGINT during embed leave no temporary output behind, and the exit status says the signal")
    func interruptedEmbedCleansUp() throws {
        let dir = Fixtures.temporaryDirectory("h2-signal")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try Fixtures.weightmark(["synth", "--params", "30M", "--hidden", "512", "--ffn", "1536", "--vocab", "4096", "--layers", "8",
                                         "--dtype", "f32", "--out", dir + "/model", "--quiet"]).status == 0)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key", "--quiet"]).status == 0)
        for (n, sig) in [SIGTERM, SIGINT].enumerated() {
            let out = dir + "/out\(n)"
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Fixtures.weightmarkExecutable)
            p.arguments = ["embed", dir + "/model", "--key", dir + "/k.key", "--out", out + "/marked", "--no-release", "--quiet"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            // Interrupt once the temporary output exists (embed writes .NAME.tmp-XXXXXX next to its output).
            var sawTemporary = false
            let deadline = Date().addingTimeInterval(60)
            while p.isRunning && Date() < deadline {
                let names = (try? FileManager.default.subpathsOfDirectory(atPath: out)) ?? []
                if names.contains(where: { $0.contains(".tmp-") }) { sawTemporary = true; kill(p.processIdentifier, sig); break }
                usleep(2000)
            }
            p.waitUntilExit()
            try #require(sawTemporary, "embed finished before its temporary file was seen; nothing was tested")
            #expect(p.terminationReason == .uncaughtSignal && p.terminationStatus == sig, "\(p.terminationReason) \(p.terminationStatus)")
            let left = ((try? FileManager.default.subpathsOfDirectory(atPath: out)) ?? []).filter { $0.contains(".tmp-") }
            #expect(left.isEmpty, "left behind after signal \(sig): \(left)")
        }
    }

    @Test("combine refuses parts of different suspects and reports edited after detect wrote them, and calls its inputs unverified")
    func combineSuspectsAndSeals() throws {
        let dir = Fixtures.temporaryDirectory("h2-combine-seal")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/a.safetensors", seed: 1)
        try Fixtures.writeSmallModel(to: dir + "/b.safetensors", seed: 2)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key", "--quiet"]).status == 0)
        for (name, part) in [("a", "0/2"), ("a", "1/2"), ("b", "1/2")] {
            _ = try Fixtures.weightmark(["detect", dir + "/\(name).safetensors", "--key", dir + "/k.key", "--release", "r1", "--format", "v1",
                                         "--part", part, "--report", dir + "/\(name)-\(part.prefix(1)).json", "--quiet"])
        }
        let ok = try Fixtures.weightmark(["combine", dir + "/a-0.json", dir + "/a-1.json"])
        #expect(ok.status == 0 || ok.status == 1, "\(ok.stderr)")
        #expect(ok.stdout.contains("unverified inputs"), "\(ok.stdout)")
        let mixed = try Fixtures.weightmark(["combine", dir + "/a-0.json", dir + "/b-1.json"])
        #expect(mixed.status == 2 && mixed.stderr.contains("computed from other files"), "\(mixed.stderr)")
        // One per-tensor correlation raised by hand: refused before any statistic is computed.
        var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/a-1.json"))) as? [String: Any])
        var tensors = try #require(object["tensors"] as? [[String: Any]])
        tensors[0]["correlation"] = 12345.0
        object["tensors"] = tensors
        Fixtures.write(Array(try JSONSerialization.data(withJSONObject: object)), to: dir + "/a-1-edited.json")
        let edited = try Fixtures.weightmark(["combine", dir + "/a-0.json", dir + "/a-1-edited.json"])
        #expect(edited.status == 2 && edited.stderr.contains("edited after detect wrote it"), "\(edited.stderr)")
    }

    @Test("a file whose name is not UTF-8 is read by scan, reported with its bytes escaped, and its pasted recheck re-detects it")
    func nonUTF8Names() throws {
        let dir = Fixtures.temporaryDirectory("h2-names")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors", shapes: Self.blindShapes)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key", "--quiet"]).status == 0)
        #expect(try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/k.key", "--out", dir + "/marked.safetensors", "--quiet"]).status == 0)
        try FileManager.default.createDirectory(atPath: dir + "/tree", withIntermediateDirectories: true)
        // Latin-1 bytes (0xE9 0xFF) in the name, and a folder with such a name.
        _ = try Fixtures.run("/bin/sh", ["-c", "cd '\(dir)' && cp marked.safetensors \"$(printf 'tree/caf\\351\\377.safetensors')\" && mkdir \"$(printf 'tree/d\\351')\""])
        let scan = try Fixtures.weightmark(["scan", dir + "/tree", "--key", dir + "/k.key", "--quiet"])
        #expect(scan.status == 0, "a hit: \(scan.stderr)")
        var recheck: String?
        var labels: [String] = []
        for line in scan.stdout.split(separator: "\n") {
            guard let r = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let path = r["path"] as? String else { continue }
            labels.append(path)
            if let hits = r["hits"] as? [[String: Any]] { recheck = hits.first?["recheck"] as? String ?? recheck }
        }
        #expect(labels.contains { $0.hasSuffix("/caf\\xE9\\xFF.safetensors") }, "\(labels)")
        #expect(scan.stdout.contains("not valid UTF-8"), "the folder is reported: \(scan.stdout)")
        let line = try #require(recheck)
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = (Fixtures.weightmarkExecutable as NSString).deletingLastPathComponent + ":" + (env["PATH"] ?? "/usr/bin:/bin")
        let r = try Fixtures.runProcess("/bin/sh", ["-c", line], environment: env)
        #expect(r.status == 0 && r.stdout.contains("WATERMARK DETECTED"), "\(line): \(r.stdout)\(r.stderr)")
    }

    @Test("a model truncated while scan reads it: no signal, the marked model next to it is still a hit, the trailer is written")
    func truncatedDuringScan() throws {
        let dir = Fixtures.temporaryDirectory("h2-live")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tree = dir + "/tree"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors", shapes: Self.blindShapes)
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key", "--quiet"]).status == 0)
        #expect(try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/k.key", "--out", tree + "/a-marked.safetensors", "--quiet"]).status == 0)
        // A 460 MB model that a mirror re-syncs in place while the sweep reads it.
        #expect(try Fixtures.weightmark(["synth", "--params", "110M", "--dtype", "f32", "--out", tree + "/b-live", "--quiet"]).status == 0)
        let live = tree + "/b-live/model.safetensors"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Fixtures.weightmarkExecutable)
        p.arguments = ["scan", tree, "--key", dir + "/k.key", "--quiet"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        // Truncate it once scan has it open (its file descriptor or mapping shows up in /proc).
        let deadline = Date().addingTimeInterval(30)
        var truncated = false
        while p.isRunning && Date() < deadline && !truncated {
            let maps = (try? String(contentsOfFile: "/proc/\(p.processIdentifier)/maps", encoding: .utf8)) ?? ""
            if maps.contains(live) { truncated = truncate(live, 4096) == 0 }
            usleep(1000)
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let stdout = String(decoding: data, as: UTF8.self)
        #expect(p.terminationReason == .exit, "ended by signal \(p.terminationStatus)")
        #expect(stdout.contains("a-marked.safetensors") && stdout.contains("\"hits\":[{"), "the marked model is a hit: \(stdout.prefix(400))")
        #expect(stdout.split(separator: "\n").last?.contains("modelsTested") == true, "the trailer is written")
        if truncated {
            let record = stdout.split(separator: "\n").first { $0.contains("b-live") } ?? ""
            #expect(record.contains("\"status\":\"error\"") && record.contains("changed while"),
                    "the live file is an error record: \(stdout.split(separator: "\n").filter { $0.contains("b-live") }.map { $0.prefix(700) })")
        }
    }

    @Test("a crash ends the process at once with one line and the signal, never a backtracer that could hang a batch run")
    func crashDoesNotHang() throws {
        let dir = Fixtures.temporaryDirectory("h2-crash")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Fixtures.weightmarkExecutable)
        p.arguments = ["synth", "--params", "2B", "--dtype", "bf16", "--out", dir + "/model"]
        var environment = ProcessInfo.processInfo.environment
        environment["SWIFT_BACKTRACE"] = nil
        p.environment = environment
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        usleep(300_000)
        let sent = Date()
        kill(p.processIdentifier, SIGSEGV)
        p.waitUntilExit()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationReason == .uncaughtSignal && p.terminationStatus == SIGSEGV, "\(p.terminationReason) \(p.terminationStatus)")
        #expect(Date().timeIntervalSince(sent) < 5)
        #expect(stderr.contains("weightmark: crashed with signal 11"), "\(stderr)")
    }

    @Test("JSON with a repeated key is refused wherever WeightMark reads JSON (key files, manifests, reports), naming the key")
    func duplicateKeysRefused() throws {
        let dir = Fixtures.temporaryDirectory("h2-dupkeys")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors")
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/k.key", "--quiet"]).status == 0)
        #expect(try Fixtures.weightmark(["embed", dir + "/model.safetensors", "--key", dir + "/k.key", "--out", dir + "/m.safetensors", "--quiet"]).status == 0)
        // A second "secret" before the closing brace: Foundation would keep one value, Python's json the last.
        var key = try String(contentsOfFile: dir + "/k.key", encoding: .utf8)
        key = key.replacingOccurrences(of: "\n}", with: ",\n  \"secret\": \"" + String(repeating: "ab", count: 32) + "\"\n}")
        Fixtures.write(Array(key.utf8), to: dir + "/dup.key")
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: dir + "/dup.key")
        let d = try Fixtures.weightmark(["detect", dir + "/m.safetensors", "--key", dir + "/dup.key"])
        #expect(d.status == 2 && d.stderr.contains("\"secret\" appears twice"), "\(d.stderr)")
        var manifest = try String(contentsOfFile: dir + "/m.safetensors.weightmark.json", encoding: .utf8)
        manifest = manifest.replacingOccurrences(of: "\n}", with: ",\n  \"keyId\" : \"0000000000000000\"\n}")
        Fixtures.write(Array(manifest.utf8), to: dir + "/dup.weightmark.json")
        let m = try Fixtures.weightmark(["detect", dir + "/m.safetensors", "--key", dir + "/k.key", "--manifest", dir + "/dup.weightmark.json"])
        #expect(m.status == 2 && m.stderr.contains("\"keyId\" appears twice"), "\(m.stderr)")
        _ = try Fixtures.weightmark(["detect", dir + "/m.safetensors", "--key", dir + "/k.key", "--release", "r1", "--format", "v1", "--part", "0/1", "--report", dir + "/r.json", "--quiet"])
        var report = try String(contentsOfFile: dir + "/r.json", encoding: .utf8)
        report = report.replacingOccurrences(of: "\n}", with: ",\n  \"detected\" : true\n}")
        Fixtures.write(Array(report.utf8), to: dir + "/dup.json")
        let c = try Fixtures.weightmark(["combine", dir + "/dup.json"])
        #expect(c.status == 2 && c.stderr.contains("\"detected\" appears twice"), "\(c.stderr)")
    }
}

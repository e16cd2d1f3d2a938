import Foundation
@testable import Scanning
import Testing
import WeightMarkTestSupport

/// The pieces of `scan` that need no model: shard assignment and the engines' variables, tar listing, the
/// family-wise arithmetic, and the walk's handling of links.
@Suite("scan parts: shards, tar listing, threshold, walk")
struct ScanPartsTests {
    @Test("assignment is a pure function of the relative path: pinned values, every shard used, balanced")
    func assignment() {
        // Pinned (first 8 bytes of SHA-256, big-endian, modulo N; values from Python's hashlib): changing the hash
        // would silently move models between the shards of a sweep run by two versions.
        #expect(ScanShard.owner(of: "mirror/org/model/model.safetensors", count: 16) == 8)
        #expect(ScanShard.owner(of: "tree/hub/q8.gguf", count: 3) == 1)
        #expect(ScanShard.owner(of: "a", count: 1000) == 250)
        let paths = (0..<2000).map { "root/d\($0 / 50)/f\($0)" }
        let owners = paths.map { ScanShard.owner(of: $0, count: 8) }
        #expect(Set(owners) == Set(0..<8))
        // Roughly balanced: each of 8 shards gets 250 ± 5σ (σ ≈ 14.8) of 2000 paths; false failure < 1e-6.
        for s in 0..<8 { #expect(abs(owners.filter { $0 == s }.count - 250) < 75) }
        #expect(ScanShard(index: 2, count: 8).owns(paths[owners.firstIndex(of: 2)!]))
    }

    @Test("--shard auto reads Kubernetes, AWS Batch and Slurm variables, and refuses what is missing or inconsistent")
    func environment() throws {
        #expect(try ScanShard.fromEnvironment(["JOB_COMPLETION_INDEX": "3", "WEIGHTMARK_SHARDS": "8"]) == ScanShard(index: 3, count: 8))
        #expect(try ScanShard.fromEnvironment(["AWS_BATCH_JOB_ARRAY_INDEX": "0", "AWS_BATCH_JOB_ARRAY_SIZE": "2"]) == ScanShard(index: 0, count: 2))
        #expect(try ScanShard.fromEnvironment(["SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "5"]) == ScanShard(index: 4, count: 5))
        #expect(try ScanShard.fromEnvironment(["SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"]) == ScanShard(index: 0, count: 2))
        for bad in [[:], ["JOB_COMPLETION_INDEX": "1"], ["JOB_COMPLETION_INDEX": "x", "WEIGHTMARK_SHARDS": "2"],
                    ["AWS_BATCH_JOB_ARRAY_INDEX": "1", "AWS_BATCH_JOB_ARRAY_SIZE": "4", "WEIGHTMARK_SHARDS": "3"],
                    ["SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4"]] as [[String: String]] {
            #expect(throws: ScanError.self, "\(bad)") { try ScanShard.fromEnvironment(bad) }
        }
    }

    @Test("tar listing: ustar, GNU long names and pax paths; truncated archives are errors", arguments: ["GNU_FORMAT", "PAX_FORMAT", "USTAR_FORMAT"])
    func tarListing(format: String) throws {
        let dir = Fixtures.temporaryDirectory("tar")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let long = format == "USTAR_FORMAT" ? "short/name.bin" : String(repeating: "deep/", count: 30) + "model.bin"
        _ = try Fixtures.runPython("""
            import io, sys, tarfile
            out, fmt, name = sys.argv[1:4]
            with tarfile.open(out, 'w', format=getattr(tarfile, fmt)) as t:
                for n, data in [('a.txt', b'hello'), (name, bytes(range(256)) * 5)]:
                    info = tarfile.TarInfo(n); info.size = len(data); t.addfile(info, io.BytesIO(data))
                d = tarfile.TarInfo('folder'); d.type = tarfile.DIRTYPE; t.addfile(d)
            """, arguments: [dir + "/t.tar", format, long])
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/t.tar")))
        func read(_ o: Int, _ n: Int) -> [UInt8] { Array(bytes[o..<min(bytes.count, o + n)]) }
        let members = try TarMembers.list(read: read, size: bytes.count)
        #expect(members.map(\.name) == ["a.txt", long])
        #expect(members.map(\.size) == [5, 1280])
        #expect(Array(bytes[members[1].offset..<(members[1].offset + 4)]) == [0, 1, 2, 3])
        #expect(throws: (any Error).self) { try TarMembers.list(read: read, size: members[1].offset + 100) }
    }

    @Test("family-wise threshold: Bonferroni in log space, z for 10⁶ models × 10 keys × 4 tests at α 1e-6")
    func threshold() {
        let z = FamilyWise.zThreshold(alpha: 1e-6, tests: 4e7)
        #expect(abs(z - 7.9145) < 1e-3)
        #expect(abs(FamilyWise.familywiseP(z: z, tests: 4e7) - 1e-6) < 1e-9)
        #expect(FamilyWise.familywiseP(z: -3, tests: 10) == 1)
        // Computed in log space: a strong hit keeps a meaningful p down to double's range (about 1e-308, z ≈ 37).
        let p30 = FamilyWise.familywiseP(z: 30, tests: 4e7)
        #expect(p30 > 0 && abs(log10(p30) - (-900 / (2 * M_LN10) + log10(4e7))) < 1e-9)
    }

    @Test("walk: a link loop is reported once and not followed, a second path to a file is scanned once, a broken link is an error")
    func walk() throws {
        let dir = Fixtures.temporaryDirectory("walk")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/t/a/b", withIntermediateDirectories: true)
        Fixtures.write([1, 2, 3], to: dir + "/t/a/b/x.bin")
        try fm.createSymbolicLink(atPath: dir + "/t/a/b/up", withDestinationPath: "../..")
        try fm.createSymbolicLink(atPath: dir + "/t/a/same.bin", withDestinationPath: "b/x.bin")
        try fm.createSymbolicLink(atPath: dir + "/t/dangling", withDestinationPath: "nowhere")
        let units = ScanWalker.units(roots: [dir + "/t"])
        let byRel = Dictionary(units.map { ($0.relativePath, $0.kind) }, uniquingKeysWith: { a, _ in a })
        #expect(byRel["t/a/b/up"] == .problem(.skipped, "symbolic link loop (leads back to a folder above it): not followed"))
        #expect(byRel["t/a/b/x.bin"] == .file)
        #expect(byRel["t/a/same.bin"] == nil, "the same file through a link is scanned once")
        if case .problem(.error, _)? = byRel["t/dangling"] {} else { Issue.record("dangling link: \(String(describing: byRel["t/dangling"]))") }
        #expect(units.count == 3)
    }
}

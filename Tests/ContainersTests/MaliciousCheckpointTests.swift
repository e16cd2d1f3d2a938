import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// The malicious and malformed corpus of `scripts/oracles/malicious_corpus.py`: code-execution payloads (proven
/// live by Python's own pickle before the corpus is written), opcodes outside the subset, memo abuse, recursion
/// bombs, lying ZIP directories, impossible tensor views. Every file must be refused by both `inspect` and `detect`.
@Suite("Malicious and malformed checkpoints", .serialized,
       .enabled(if: Fixtures.oraclesAvailable, "Python oracle venv not installed (make venv)"))
struct MaliciousCheckpointTests {
    struct Case: Decodable { var file: String; var expect: String; var payload: Bool }

    static let corpus: (dir: String, marker: String, cases: [Case]) = {
        let dir = Fixtures.temporaryDirectory("malicious")
        let marker = dir + "/PAYLOAD-RAN"
        _ = try! Fixtures.run(Fixtures.python!, [Fixtures.packageRoot + "/scripts/oracles/malicious_corpus.py", dir + "/corpus", marker])
        let data = FileManager.default.contents(atPath: dir + "/corpus/cases.json")!
        return (dir, marker, try! JSONDecoder().decode([Case].self, from: data))
    }()

    @Test("the corpus has at least 25 cases, and at least 8 carry live payloads")
    func corpusSize() {
        #expect(Self.corpus.cases.count >= 25)
        #expect(Self.corpus.cases.filter(\.payload).count >= 8)
    }

    /// Runs weightmark under an address-space limit (`ulimit -v`, in KB): a parser that believed a lying size and
    /// tried to allocate it would die instead of exiting 2. detect's limit is higher for the BLAS threads' buffers.
    static func bounded(_ arguments: [String], kilobytes: Int) throws -> (status: Int32, stdout: String, stderr: String) {
        try Fixtures.runProcess("/bin/sh", ["-c", "ulimit -v \(kilobytes); exec \"$0\" \"$@\"", Fixtures.weightmarkExecutable] + arguments)
    }

    @Test("inspect (under 1 GB of address space) and detect (3 GB) exit 2 with the expected message, run no payload, and finish within 10 s each")
    func everyCaseRefused() throws {
        let (dir, marker, cases) = Self.corpus
        _ = try Fixtures.weightmark(["keygen", "--out", dir + "/k.key"])
        for c in cases {
            for command in [["inspect", c.file], ["detect", c.file, "--key", dir + "/k.key", "--quiet"]] {
                let start = Date()
                let r = try Self.bounded(command, kilobytes: command[0] == "inspect" ? 1_000_000 : 3_000_000)
                let seconds = Date().timeIntervalSince(start)
                let name = (c.file as NSString).lastPathComponent
                #expect(r.status == 2, "\(command[0]) \(name): exit \(r.status), \(r.stderr)")
                #expect(r.stderr.contains(c.expect), "\(command[0]) \(name): \(r.stderr)")
                #expect(r.stderr.contains(c.file), "\(command[0]) \(name): the message names the file")
                #expect(!r.stderr.contains("Fatal error") && !r.stderr.contains("Stack dump"), "\(name) crashed")
                #expect(r.stderr.split(separator: "\n").count <= 2, "\(name): one clear message, not a dump")
                #expect(seconds < 10, "\(command[0]) \(name) took \(seconds) s")
                #expect(!FileManager.default.fileExists(atPath: marker), "\(name): the payload ran")
            }
        }
    }
}

import Foundation
import Testing
import WeightMarkTestSupport

/// A secret key must never be readable by anyone but its owner, not even for a moment: a file that is 0644
/// for a millisecond can be opened then and read at leisure. The final mode alone cannot show that, so the
/// `weightmark keygen` process is traced (strace) and every file it creates and every mode it sets is checked.
@Suite("Key file permissions")
struct KeyFilePermissionTests {
    static let strace = ["/usr/bin/strace", "/bin/strace"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// One traced system call that creates a file or sets a mode.
    struct ModeEvent: CustomStringConvertible {
        var line: String
        var path: String?
        var mode: Int
        var description: String { line }
    }

    /// Mode-setting calls (chmod family) and file-creating opens (O_CREAT, creat, mknod) in an strace log.
    static func modeEvents(inTrace log: String) -> [ModeEvent] {
        var events: [ModeEvent] = []
        for raw in log.split(separator: "\n") {
            let line = String(raw)
            guard let open = line.firstIndex(of: "("), let close = line.lastIndex(of: ")"), open < close else { continue }
            let call = line[..<open].split(separator: " ").last.map(String.init) ?? ""
            let args = line[line.index(after: open)..<close].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let quoted = line[open...].split(separator: "\"", omittingEmptySubsequences: false)
            let path = quoted.count >= 3 ? String(quoted[1]) : nil
            let creates: Bool
            switch call {
            case "open", "openat", "openat2": creates = args.contains { $0.contains("O_CREAT") }
            case "creat", "mknod", "mknodat", "chmod", "fchmod", "fchmodat", "fchmodat2": creates = true
            default: creates = false
            }
            guard creates else { continue }
            // The mode is the last octal argument (0600, 0644, …; mknod's may carry S_IFREG|0600).
            guard let modeText = args.last(where: { $0.hasPrefix("0") || $0.contains("|0") }),
                  let mode = Int(modeText.split(separator: "|").last!, radix: 8) else {
                events.append(ModeEvent(line: line, path: path, mode: 0o777)) // unparsed: treated as wide
                continue
            }
            events.append(ModeEvent(line: line, path: path, mode: mode))
        }
        return events
    }

    @Test("the trace parser finds creating opens and mode changes, and their modes")
    func parser() {
        let log = """
        123 openat(AT_FDCWD, "/tmp/k/.owner.key.tmp-AbC123", O_RDWR|O_CREAT|O_EXCL, 0600) = 3
        123 openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 4
        123 fchmod(3, 0644)                     = 0
        123 chmod("/tmp/k/owner.key", 0600)     = 0
        124 fchmodat(AT_FDCWD, "/tmp/k/x", 0640) = 0
        """
        let e = Self.modeEvents(inTrace: log)
        #expect(e.map(\.mode) == [0o600, 0o644, 0o600, 0o640])
        #expect(e.map(\.path) == ["/tmp/k/.owner.key.tmp-AbC123", nil, "/tmp/k/owner.key", "/tmp/k/x"])
    }

    @Test("keygen: the key is mode 0600 exactly, and no file wider than 0600 exists at any moment")
    func keygenNeverWidensTheMode() throws {
        let dir = Fixtures.temporaryDirectory("keymode")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/owner.key"
        let traceLog = dir + "/keygen.strace"
        let result: (status: Int32, stdout: String, stderr: String)
        if let strace = Self.strace {
            result = try Fixtures.runProcess(strace, ["-f", "-qq", "-o", traceLog, "-e",
                                                      "trace=open,openat,creat,mknod,mknodat,chmod,fchmod,fchmodat",
                                                      Fixtures.weightmarkExecutable, "keygen", "--out", path])
        } else {
            // Without strace only the final mode can be checked; `make test` requires the tracer.
            if Fixtures.oraclesRequired { Issue.record("strace is missing: apt-get install strace (scripts/setup-system.sh installs it)") }
            result = try Fixtures.weightmark(["keygen", "--out", path])
        }
        #expect(result.status == 0, "\(result.stderr)")
        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(st.st_mode & 0o7777 == 0o600, "mode \(String(st.st_mode & 0o7777, radix: 8))")
        guard Self.strace != nil else { return }
        let events = Self.modeEvents(inTrace: try String(contentsOfFile: traceLog, encoding: .utf8))
        // The key (or its temporary file) was created in `dir` and seen by the parser: otherwise the checks below
        // would pass vacuously.
        let created = events.filter { $0.path?.hasPrefix(dir + "/") == true && $0.path != traceLog }
        #expect(!created.isEmpty, "no file creation in \(dir) found in the trace")
        // keygen writes nothing but the key, so any mode with group/other bits is the key's (fchmod names only an fd).
        for e in events where e.path != traceLog && (e.path == nil || e.path!.hasPrefix(dir + "/")) {
            #expect(e.mode & 0o077 == 0, "the key was given mode \(String(e.mode, radix: 8)): \(e.line)")
        }
    }
}

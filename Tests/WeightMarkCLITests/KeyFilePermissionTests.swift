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

    /// Mode-setting calls (chmod family) and file-creating opens (O_CREAT, creat, mknod) in an `strace -f` log.
    /// `fchmod(fd, …)` gets the path of the file most recently opened as that descriptor.
    static func modeEvents(inTrace log: String) -> [ModeEvent] {
        var events: [ModeEvent] = []
        var openFiles: [String: String] = [:]   // descriptor → path (threads share the table; fork is not used)
        for raw in log.split(separator: "\n") {
            let line = String(raw)
            // `pid call(args) = result`, where the result may itself hold parentheses ("-1 EEXIST (File exists)").
            guard let equals = line.range(of: " = ", options: .backwards), let open = line.firstIndex(of: "("),
                  let close = line[..<equals.lowerBound].lastIndex(of: ")"), open < close else { continue }
            let call = line[..<open].split(separator: " ").last.map(String.init) ?? ""
            let args = line[line.index(after: open)..<close].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            let quoted = line[open...].split(separator: "\"", omittingEmptySubsequences: false)
            var path = quoted.count >= 3 ? String(quoted[1]) : nil
            let result = line[equals.upperBound...].split(separator: " ").first.map(String.init)
            let creates: Bool
            switch call {
            case "open", "openat", "openat2", "creat":
                if let path, let fd = result, let n = Int(fd), n >= 0 { openFiles[fd] = path }
                creates = call == "creat" || args.contains { $0.contains("O_CREAT") }
            case "fchmod":
                path = args.first.flatMap { openFiles[$0] }
                creates = true
            case "mknod", "mknodat", "chmod", "fchmodat", "fchmodat2": creates = true
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

    /// Runs `weightmark` with `arguments` under strace (when present; required by `make test`); returns its result
    /// and the mode events of the trace (nil without strace).
    static func tracedWeightmark(_ arguments: [String], log: String) throws -> (status: Int32, stderr: String, events: [ModeEvent]?) {
        guard let strace else {
            if Fixtures.oraclesRequired { Issue.record("strace is missing: apt-get install strace (scripts/setup-system.sh installs it)") }
            let r = try Fixtures.weightmark(arguments)
            return (r.status, r.stderr, nil)
        }
        let r = try Fixtures.runProcess(strace, ["-f", "-qq", "-o", log, "-e", "trace=open,openat,creat,mknod,mknodat,chmod,fchmod,fchmodat",
                                                 Fixtures.weightmarkExecutable] + arguments)
        return (r.status, r.stderr, modeEvents(inTrace: try String(contentsOfFile: log, encoding: .utf8)))
    }

    static func mode(of path: String) -> Int? {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_mode & 0o7777) : nil
    }

    @Test("the trace parser finds creating opens and mode changes, and their modes")
    func parser() {
        let log = """
        123 openat(AT_FDCWD, "/tmp/k/.owner.key.tmp-AbC123", O_RDWR|O_CREAT|O_EXCL, 0600) = 3
        123 openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 4
        123 fchmod(3, 0644)                     = 0
        123 chmod("/tmp/k/owner.key", 0600)     = 0
        124 fchmodat(AT_FDCWD, "/tmp/k/x", 0640) = 0
        124 openat(AT_FDCWD, "/tmp/k/y", O_WRONLY|O_CREAT|O_EXCL, 0600) = -1 EEXIST (File exists)
        """
        let e = Self.modeEvents(inTrace: log)
        #expect(e.map(\.mode) == [0o600, 0o644, 0o600, 0o640, 0o600])
        // fchmod(3, …) is resolved to the file opened as descriptor 3.
        #expect(e.map(\.path) == ["/tmp/k/.owner.key.tmp-AbC123", "/tmp/k/.owner.key.tmp-AbC123", "/tmp/k/owner.key", "/tmp/k/x", "/tmp/k/y"])
    }

    @Test("keygen: the key is mode 0600 exactly, and no file wider than 0600 exists at any moment")
    func keygenNeverWidensTheMode() throws {
        let dir = Fixtures.temporaryDirectory("keymode")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/owner.key", traceLog = dir + "/keygen.strace"
        let r = try Self.tracedWeightmark(["keygen", "--out", path], log: traceLog)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(Self.mode(of: path) == 0o600, "mode \(Self.mode(of: path).map { String($0, radix: 8) } ?? "none")")
        guard let events = r.events else { return }
        // The key (or its temporary file) was created in `dir` and seen by the parser: otherwise the checks below
        // would pass vacuously.
        #expect(events.contains { $0.path?.hasPrefix(dir + "/") == true && $0.path != traceLog }, "no file creation in \(dir) found in the trace")
        // keygen writes nothing but the key: every mode it gives a file there (or an unresolved descriptor) is the key's.
        for e in events where e.path != traceLog && (e.path == nil || e.path!.hasPrefix(dir + "/")) {
            #expect(e.mode & 0o077 == 0, "the key was given mode \(String(e.mode, radix: 8)): \(e.line)")
        }
    }

    @Test("demo: both key files are mode 0600 exactly and never wider")
    func demoKeysNeverWiden() throws {
        let dir = Fixtures.temporaryDirectory("demomode")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // 4.2 M weights: at the 5e-3 cap the demo's blind detection reaches Z ≈ 10, so it runs to the end (exit 0).
        try Fixtures.writeSmallModel(to: dir + "/model.safetensors", shapes: [("a.weight", [2048, 1024]), ("b.weight", [1024, 2048])])
        let work = dir + "/work", traceLog = dir + "/demo.strace"
        let r = try Self.tracedWeightmark(["demo", "--model", dir + "/model.safetensors", "--workdir", work], log: traceLog)
        #expect(r.status == 0, "\(r.stderr)")
        let keys = [work + "/owner.key", work + "/someone-else.key"]
        for key in keys { #expect(Self.mode(of: key) == 0o600, "\(key): mode \(Self.mode(of: key).map { String($0, radix: 8) } ?? "none")") }
        guard let events = r.events else { return }
        // A key file or its temporary (".owner.key.tmp-…" next to it).
        func isKey(_ path: String) -> Bool {
            keys.contains { path == $0 || path.hasPrefix(work + "/." + ($0 as NSString).lastPathComponent + ".") }
        }
        let keyEvents = events.filter { $0.path.map(isKey) ?? false }
        #expect(keyEvents.count >= 2, "the trace shows no creation of the two key files")
        for e in keyEvents { #expect(e.mode & 0o077 == 0, "a key file was given mode \(String(e.mode, radix: 8)): \(e.line)") }
        // Descriptors the parser could not resolve could be a key's: none may widen a mode.
        for e in events where e.path == nil { #expect(e.mode & 0o077 == 0, "unresolved: \(e.line)") }
    }
}

import Foundation
import Testing
import WeightMarkTestSupport

/// The whole `--help` text of the root command and of every subcommand, compared with the committed snapshots in
/// `Help/` (as swift-argument-parser's own tests pin help output). A changed option, value list, default or
/// wording shows up as a diff to review; a new subcommand needs its snapshot.
///
/// To accept intended changes: `WEIGHTMARK_WRITE_HELP_SNAPSHOTS=1 swift test -c release --filter HelpSnapshotTests` rewrites the
/// snapshots (and fails, so a rewrite is never mistaken for a pass), then review `git diff Tests/WeightMarkCLITests/Help`.
@Suite("--help snapshots")
struct HelpSnapshotTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Help").path
    static let rewrite = ProcessInfo.processInfo.environment["WEIGHTMARK_WRITE_HELP_SNAPSHOTS"] == "1"

    /// Subcommand names as the root help lists them (stdout is a pipe, so the parser wraps at 80 columns).
    static func subcommands() throws -> [String] {
        let root = try Fixtures.weightmark(["--help"]).stdout
        guard let section = root.range(of: "SUBCOMMANDS:") else { return [] }
        // The section's entries end at its first blank line ("See 'weightmark help …'" follows).
        let lines = root[section.upperBound...].split(separator: "\n", omittingEmptySubsequences: false).dropFirst()
        return lines.prefix { !$0.isEmpty }.compactMap { line -> String? in
            guard line.hasPrefix("  "), !line.hasPrefix("   ") else { return nil }
            return line.split(separator: " ").first.map(String.init)
        }.filter { $0 != "help" }
    }

    func check(_ arguments: [String], snapshot name: String) throws {
        let r = try Fixtures.weightmark(arguments)
        #expect(r.status == 0, "\(arguments) exited \(r.status): \(r.stderr)")
        let path = "\(Self.folder)/\(name).txt"
        if Self.rewrite {
            try FileManager.default.createDirectory(atPath: Self.folder, withIntermediateDirectories: true)
            try r.stdout.write(toFile: path, atomically: true, encoding: .utf8)
            Issue.record("rewrote \(path): review the diff, then run again without WEIGHTMARK_WRITE_HELP_SNAPSHOTS")
            return
        }
        guard let expected = try? String(contentsOfFile: path, encoding: .utf8) else {
            Issue.record("no help snapshot \(path) for `weightmark \(arguments.joined(separator: " "))`: write it with WEIGHTMARK_WRITE_HELP_SNAPSHOTS=1")
            return
        }
        if r.stdout != expected {
            let got = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            let want = expected.split(separator: "\n", omittingEmptySubsequences: false)
            let first = (0..<min(got.count, want.count)).first { got[$0] != want[$0] } ?? min(got.count, want.count)
            Issue.record("""
                help of `weightmark \(arguments.joined(separator: " "))` differs from \(path) at line \(first + 1):
                  got:      \(first < got.count ? String(got[first]) : "<end>")
                  snapshot: \(first < want.count ? String(want[first]) : "<end>")
                """)
        }
    }

    @Test("root help matches its snapshot and lists every subcommand")
    func root() throws {
        try check(["--help"], snapshot: "weightmark")
        let names = try Self.subcommands()
        #expect(names.count >= 10, "subcommands parsed from the root help: \(names)")
        #expect(names.contains("embed") && names.contains("detect"))
    }

    @Test("every subcommand's whole help matches its snapshot")
    func subcommandHelp() throws {
        for name in try Self.subcommands() {
            try check([name, "--help"], snapshot: name)
        }
    }

    @Test("every help page fits a terminal (≤ 40 lines) and has its section in docs/CLI.md, which names every hidden option")
    func fitsATerminal() throws {
        let doc = try String(contentsOfFile: Fixtures.packageRoot + "/docs/CLI.md", encoding: .utf8)
        let root = try Fixtures.weightmark(["--help"]).stdout
        #expect(Self.lineCount(root) <= 40, "root help has \(Self.lineCount(root)) lines")
        for name in try Self.subcommands() {
            let help = try Fixtures.weightmark([name, "--help"]).stdout
            let lines = Self.lineCount(help)
            #expect(lines <= 40, "`weightmark \(name) --help` has \(lines) lines")
            #expect(doc.contains("\n## \(name)\n"), "docs/CLI.md has no section for \(name)")
            // Options only --help-hidden shows must be explained in the reference.
            let all = try Fixtures.weightmark([name, "--help-hidden"]).stdout
            let visible = Set(Self.optionNames(help)), hidden = Self.optionNames(all).filter { !visible.contains($0) }
            for option in hidden {
                #expect(doc.contains("`\(option)"), "docs/CLI.md does not mention \(name)'s hidden option \(option)")
            }
        }
    }

    /// Lines as a terminal shows them (`wc -l`).
    static func lineCount(_ text: String) -> Int { text.filter { $0 == "\n" }.count + (text.hasSuffix("\n") || text.isEmpty ? 0 : 1) }

    /// Long option names listed at the start of the OPTIONS entries of a help page.
    static func optionNames(_ help: String) -> [String] {
        help.split(separator: "\n").compactMap { line -> String? in
            let t = line.drop { $0 == " " }
            guard line.hasPrefix("  "), t.hasPrefix("--") else { return nil }
            return t.split(separator: " ").first.map { String($0) }
        }
    }

    @Test("closed option values are listed in --help and a wrong value is refused with the list")
    func optionValues() throws {
        // Help wraps at 80 columns: compare with whitespace runs folded.
        func help(_ command: String) throws -> String {
            try Fixtures.weightmark([command, "--help"]).stdout.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        }
        #expect(try help("bench").contains("values: uniform, magnitude, both"))
        #expect(try help("convert").contains("values: F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K"))
        #expect(try help("synth").contains("values: bf16, f16, f32"))
        let wrong = try Fixtures.weightmark(["synth", "--dtype", "int3", "--out", "/nonexistent/x"])
        #expect(wrong.status == 2 && wrong.stderr.contains("bf16"), "\(wrong.stderr)")
        let lower = try Fixtures.weightmark(["convert", "/nonexistent/model", "--type", "q4_k", "--out", "/nonexistent/x.gguf"])
        #expect(!lower.stderr.contains("--type"), "lower-case ggml type refused: \(lower.stderr)")
    }
}

import Foundation
import TensorIO
import Watermarking

/// Human output on stdout, progress and notes on stderr.
enum Console {
    static func out(_ line: String = "") { print(printable(line)) }

    static func note(_ line: String, quiet: Bool = false) {
        guard !quiet else { return }
        FileHandle.standardError.write(Data((printable(line) + "\n").utf8))
    }

    /// `text` with every control character but newline and tab written as `\xNN` (`\u{NNNN}` for C1): a file name
    /// can hold an escape sequence (a forged terminal title, a carriage return that overwrites a line), and what we
    /// print for a person must show it, never obey it. (The progress bar's own `\r` goes through another path.)
    static func printable(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\n" && $0 != "\t") || (0x7F...0x9F).contains($0.value) }) else { return text }
        var out = ""
        for s in text.unicodeScalars {
            if s.value < 0x20 && s != "\n" && s != "\t" || s.value == 0x7F { out += String(format: "\\x%02X", s.value) }
            else if (0x80...0x9F).contains(s.value) { out += String(format: "\\u{%04X}", s.value) }
            else { out.unicodeScalars.append(s) }
        }
        return out
    }

    /// Pretty JSON with sorted keys, for `--json`.
    static func json<T: Encodable>(_ value: T) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try e.encode(value), as: UTF8.self)
    }

    /// Writes `json(value)` plus a newline to `path` atomically (manifests, reports, results).
    static func writeJSON<T: Encodable>(_ value: T, to path: String, overwrite: Bool) throws {
        try AtomicFileWriter.write(Array((try json(value) + "\n").utf8), to: path, overwrite: overwrite)
    }

    /// Loads a key file, warning on stderr when others can read it.
    static func loadKey(_ path: String, quiet: Bool) throws -> WatermarkKey {
        let key = try WatermarkKey.load(from: path)
        if let warning = WatermarkKey.permissionWarning(path: path) { note(warning, quiet: quiet) }
        return key
    }

    static func bytes(_ n: Int) -> String {
        let units = ["B", "KB", "MB", "GB", "TB"]
        var v = Double(n), u = 0
        while v >= 1000 && u < units.count - 1 { v /= 1000; u += 1 }
        return u == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[u])
    }

    static func count(_ n: Int) -> String {
        let s = String(n)
        var out = ""
        for (i, c) in s.reversed().enumerated() {
            if i > 0 && i % 3 == 0 && c != "-" { out.append(",") }
            out.append(c)
        }
        return String(out.reversed())
    }

    /// Left-aligned text columns, right-aligned where `rightAligned` says so.
    static func table(_ header: [String], _ rows: [[String]], rightAligned: Set<Int> = []) -> String {
        let all = [header] + rows
        let widths = header.indices.map { c in all.map { $0[c].count }.max() ?? 0 }
        func line(_ r: [String]) -> String {
            r.enumerated().map { c, cell in
                let pad = String(repeating: " ", count: widths[c] - cell.count)
                return rightAligned.contains(c) ? pad + cell : cell + pad
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        return ([line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")] + rows.map(line))
            .joined(separator: "\n")
    }
}

/// A one-line progress bar with ETA on stderr, redrawn at most ten times a second.
final class ProgressBar: Sendable {
    // Advanced from worker threads (detection, synthesis) and from the writer's thread: all mutable state is behind
    // one lock, so a bar can be captured by `@Sendable` progress callbacks as it is.
    private struct State { var total: Int; var done = 0; var lastDraw = Date.distantPast }
    private let state: Locked<State>
    private let label: String
    private let enabled: Bool
    private let start = Date()

    init(total: Int, label: String, enabled: Bool) {
        state = Locked(State(total: max(1, total)))
        self.label = label
        self.enabled = enabled && isatty(2) != 0
    }

    func reset(total: Int) { state.withLock { $0.total = max(1, total); $0.done = 0 } }

    func advance(by n: Int = 1, detail: String = "") {
        let now = Date()
        let frac: Double? = state.withLock { s in
            s.done += n
            guard enabled, now.timeIntervalSince(s.lastDraw) > 0.1 || s.done >= s.total else { return nil }
            s.lastDraw = now
            return min(1, Double(s.done) / Double(s.total))
        }
        guard let frac else { return }
        let width = 28
        let filled = Int(frac * Double(width))
        let elapsed = now.timeIntervalSince(start)
        let eta = frac > 0 ? elapsed * (1 - frac) / frac : 0
        let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
        let text = String(format: "\r%@ %@ %3.0f%%  %.0fs left  %@", label, bar, frac * 100, eta, String(detail.prefix(40)))
        FileHandle.standardError.write(Data((text + "\u{1B}[K").utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}

import CTensorIOKernels
import Foundation

/// Command-line arguments as bytes. Swift's `CommandLine.arguments` replaces bytes that are not valid UTF-8, so a file
/// whose name is not UTF-8 could not be named on the command line. Such an argument is replaced by a link with a UTF-8
/// name, in a private folder removed at exit (and on SIGINT/SIGTERM), that leads to exactly those bytes: every command
/// then reads the file (`scan` prints such recheck commands). Outputs cannot be named this way (a link is not a place
/// to write).
enum RawArguments {
    // Unsafe: written once, on the main thread, while the arguments are read (before any other thread starts);
    // only read afterwards, at exit.
    nonisolated(unsafe) private static var folder: String?

    static func arguments() -> [String] {
        let argv = CommandLine.unsafeArgv
        var out: [String] = []
        for i in 1..<Int(CommandLine.argc) {
            guard let p = argv[i] else { continue }
            if let s = String(validatingCString: p) { out.append(s); continue }
            let bytes = Array(UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p)))
            out.append(link(to: bytes) ?? String(decoding: bytes, as: UTF8.self))
        }
        return out
    }

    private static func link(to raw: [UInt8]) -> String? {
        var target = raw
        if raw.first != UInt8(ascii: "/") {
            var cwd = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            guard getcwd(&cwd, cwd.count) != nil else { return nil }
            target = cwd.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) } + [UInt8(ascii: "/")] + raw
        }
        if folder == nil {
            var template = Array((NSTemporaryDirectory() + "weightmark-args-XXXXXX").utf8CString)
            guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { return nil }
            folder = String(cString: made)
            _ = weightmark_register_temporary(folder!)
            atexit {
                guard let f = RawArguments.folder else { return }
                if let names = try? FileManager.default.contentsOfDirectory(atPath: f) { for n in names { unlink(f + "/" + n) } }
                rmdir(f)
            }
        }
        let name = (String(decoding: raw.split(separator: UInt8(ascii: "/")).last ?? [], as: UTF8.self))
            .replacingOccurrences(of: "\u{FFFD}", with: "_")
        let path = folder! + "/" + (name.isEmpty ? "argument" : name)
        let ok = (target + [0]).withUnsafeBufferPointer { t in
            t.baseAddress!.withMemoryRebound(to: CChar.self, capacity: t.count) { symlink($0, path) == 0 }
        }
        guard ok else { return nil }
        _ = weightmark_register_temporary(path)
        return path
    }
}

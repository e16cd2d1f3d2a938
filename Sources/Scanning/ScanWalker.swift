import CTensorIOKernels
import Foundation
import Glibc
import TensorIO

/// Something the walk found: a file to sniff, a folder that is one model (sharded safetensors with an index,
/// Hugging Face PyTorch shards, Meta consolidated shards), or a problem of the walk itself.
public struct ScanUnit: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case file
        /// A folder read as one model; the files it groups are not visited on their own.
        case folder
        /// Not scanned: a status and the reason (a loop, an unlistable folder, a missing input).
        case problem(ScanStatus, String)
    }
    /// The path as walked (root joined with the relative path).
    public var path: String
    /// Path relative to its scan root, prefixed with the root's last component: what shards are assigned by.
    public var relativePath: String
    public var kind: Kind
    /// How records name it when that differs from `path`: a name that is not valid UTF-8 is opened through a link
    /// with a UTF-8 name (`path`) and shown with its bytes escaped (`\xNN`).
    public var label: String?
    /// The original path's bytes when they are not valid UTF-8 (for the recheck command).
    public var rawPath: [UInt8]?

    public init(path: String, relativePath: String, kind: Kind, label: String? = nil, rawPath: [UInt8]? = nil) {
        self.path = path; self.relativePath = relativePath; self.kind = kind; self.label = label; self.rawPath = rawPath
    }
}

/// Links, in a private scratch folder, to files whose names are not valid UTF-8 (which a Swift String cannot hold):
/// the walk opens them through the link and reports the original name with its bytes escaped. The folder is
/// removed when the walk is over (and on SIGINT/SIGTERM).
/// Sendable: used by one walk at a time: it is a private `let` of a `ScanWalker`, which is not Sendable and so is
/// not shared between threads; `folder` and `count` need no lock.
final class NameLinks: @unchecked Sendable {
    private var folder: String?
    private var count = 0

    /// A UTF-8 path that leads to `parent`/`raw`, or nil when no link could be made.
    func link(parent: String, raw: [UInt8]) -> String? {
        if folder == nil {
            var template = Array((NSTemporaryDirectory() + "weightmark-names-XXXXXX").utf8CString)
            guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else { return nil }
            folder = String(cString: made)
            _ = weightmark_register_temporary(folder!)
        }
        count += 1
        let link = folder! + "/\(count)"
        let target = Array(parent.utf8) + [UInt8(ascii: "/")] + raw + [0]
        let ok = target.withUnsafeBufferPointer { t in
            t.baseAddress!.withMemoryRebound(to: CChar.self, capacity: t.count) { symlink($0, link) == 0 }
        }
        return ok ? link : nil
    }

    deinit {
        guard let folder else { return }
        for i in 1...max(1, count) { unlink(folder + "/\(i)") }
        rmdir(folder)
    }

    /// A shell word that any POSIX shell turns back into exactly these bytes: `"$(printf '…')"`, every byte outside
    /// printable ASCII as an octal escape (`\377`), `%` doubled and `'` closed and reopened: how a recheck command
    /// names a file whose name is not UTF-8.
    static func shellBytes(_ raw: [UInt8]) -> String {
        var out = "\"$(printf '"
        for b in raw {
            switch b {
            case UInt8(ascii: "\\"): out += "\\\\"
            case UInt8(ascii: "'"): out += "'\\''"
            case UInt8(ascii: "%"): out += "%%"
            case 0x20..<0x7F: out += String(UnicodeScalar(b))
            default: out += "\\" + String(b, radix: 8)
            }
        }
        return out + "')\""
    }

    /// The name with every byte that is not part of valid UTF-8 written as \xNN.
    static func escaped(_ raw: [UInt8]) -> String {
        var out = ""
        var i = 0
        while i < raw.count {
            var decoded = false
            for length in stride(from: 4, through: 1, by: -1) where i + length <= raw.count {
                if let s = String(validating: raw[i..<(i + length)], as: UTF8.self), s.unicodeScalars.count == 1 {
                    out += s
                    i += length
                    decoded = true
                    break
                }
            }
            if !decoded { out += String(format: "\\x%02X", raw[i]); i += 1 }
        }
        return out
    }
}

/// Walks scan roots without following a symbolic link into a folder already on the way down (a loop), without
/// visiting a file or folder twice through two paths, and without writing anything.
///
/// Entries are visited in byte order of their names, so every shard of a sweep sees the same units in the same order.
/// Units are handed to `visit` as they are found: memory grows with the depth and the largest folder, not with the
/// tree (only folders, hard-linked files and files reached through a link are remembered).
public struct ScanWalker {
    /// Files seen (grouped model files included).
    public private(set) var files = 0
    private var visitedDirectories = Set<FileID>()
    private var visitedFiles = Set<FileID>()
    private var onTheWay: [FileID] = []
    /// Resolved scan roots: a link to a file under one of them is skipped, since the walk reaches the file itself.
    private let resolvedRoots: [String]
    private var visit: (ScanUnit) -> Void = { _ in }
    private let nameLinks = NameLinks()

    struct FileID: Hashable { var device: UInt64; var inode: UInt64 }

    /// - Parameter roots: every root of the sweep (links into any of them are not followed to files).
    public init(roots: [String]) {
        resolvedRoots = roots.compactMap { r in realpath(r, nil).map { p in defer { free(p) }; return String(cString: p) } }
    }

    /// Collects every unit under `roots` (tests; a sweep streams with `walk(root:visit:)`).
    public static func units(roots: [String]) -> [ScanUnit] {
        var w = ScanWalker(roots: roots)
        var out: [ScanUnit] = []
        for r in roots { w.walk(root: r) { out.append($0) } }
        return out
    }

    /// Hands `visit` the units under `root` (a file or a folder; a symbolic link is followed).
    public mutating func walk(root: String, visit: @escaping (ScanUnit) -> Void) {
        self.visit = visit
        defer { self.visit = { _ in } }
        let trimmed = root.count > 1 && root.hasSuffix("/") ? String(root.dropLast()) : root
        let base = (trimmed as NSString).lastPathComponent
        var st = stat()
        guard stat(trimmed, &st) == 0 else {
            visit(ScanUnit(path: trimmed, relativePath: base, kind: .problem(.error, "cannot open: \(String(cString: strerror(errno))); check the path and permissions")))
            return
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            walkDirectory(trimmed, relative: base, id: FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)))
        } else if (st.st_mode & S_IFMT) == S_IFREG {
            addFile(trimmed, relative: base, id: FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)), links: Int(st.st_nlink))
        } else {
            visit(ScanUnit(path: trimmed, relativePath: base, kind: .problem(.skipped, "not a regular file or folder")))
        }
    }

    private mutating func addFile(_ path: String, relative: String, id: FileID, links: Int = 1, throughLink: Bool = false) {
        files += 1
        if throughLink, let real = realpath(path, nil).map({ p in defer { free(p) }; return String(cString: p) }),
           resolvedRoots.contains(where: { real == $0 || real.hasPrefix($0 == "/" ? "/" : $0 + "/") }),
           !visitedFiles.contains(id) {
            return // a link to a file inside the sweep: scanned where it is
        }
        // Hard-linked files and files reached through a link may be reached again: remembered.
        if links > 1 || throughLink {
            guard visitedFiles.insert(id).inserted else { return }
        }
        visit(ScanUnit(path: path, relativePath: relative, kind: .file))
    }

    private mutating func walkDirectory(_ path: String, relative: String, id: FileID) {
        if onTheWay.contains(id) {
            visit(ScanUnit(path: path, relativePath: relative, kind: .problem(.skipped, "symbolic link loop (leads back to a folder above it): not followed")))
            return
        }
        guard visitedDirectories.insert(id).inserted else { return } // reached before through another path
        guard let dir = opendir(path) else {
            visit(ScanUnit(path: path, relativePath: relative, kind: .problem(.error, "cannot list the folder: \(String(cString: strerror(errno))); nothing under it was scanned")))
            return
        }
        var names: [(name: String, type: UInt8)] = []
        var rawNames: [String: [UInt8]] = [:]
        while let e = readdir(dir) {
            let raw = withUnsafeBytes(of: e.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            guard let name = String(validating: raw, as: UTF8.self) else {
                let shown = NameLinks.escaped(raw)
                rawNames[shown] = raw
                names.append((shown, e.pointee.d_type))
                continue
            }
            if name == "." || name == ".." { continue }
            names.append((name, e.pointee.d_type))
        }
        closedir(dir)
        names.sort { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }
        onTheWay.append(id)
        defer { onTheWay.removeLast() }

        // Folder-level models: their files are read through the folder, not one by one.
        let all = Set(names.map(\.name))
        var grouped = Set<String>()
        if all.contains(SafetensorsModel.indexFileName) {
            grouped.formUnion(all.filter { $0.hasSuffix(".safetensors") || $0 == SafetensorsModel.indexFileName })
        }
        if all.contains(PyTorchShardedModel.indexFileName) {
            grouped.formUnion(all.filter { $0.hasSuffix(".bin") || $0 == PyTorchShardedModel.indexFileName })
        }
        if all.contains("params.json"), all.contains(where: { $0.hasPrefix("consolidated.") && $0.hasSuffix(".pth") }),
           MetaConsolidatedModel.isMetaFolder(path) {
            grouped.formUnion(all.filter { $0.hasPrefix("consolidated.") && $0.hasSuffix(".pth") })
        }
        if !grouped.isEmpty {
            visit(ScanUnit(path: path, relativePath: relative, kind: .folder))
            files += grouped.count
        }
        for (name, type) in names where !grouped.contains(name) {
            let child = path == "/" ? "/" + name : path + "/" + name
            let rel = relative + "/" + name
            if let raw = rawNames[name] {
                // Not UTF-8: a file is read through a link and reported with its bytes escaped; a folder is reported.
                var st = stat()
                guard let link = nameLinks.link(parent: path, raw: raw), stat(link, &st) == 0 else {
                    visit(ScanUnit(path: child, relativePath: rel, kind: .problem(.error, "the name is not valid UTF-8 and could not be opened through a link; rename it (e.g. convmv -f latin1 -t utf8)")))
                    continue
                }
                if (st.st_mode & S_IFMT) == S_IFREG {
                    files += 1
                    visit(ScanUnit(path: link, relativePath: rel, kind: .file, label: child, rawPath: Array(path.utf8) + [UInt8(ascii: "/")] + raw))
                } else {
                    visit(ScanUnit(path: child, relativePath: rel, kind: .problem(.error, "a folder whose name is not valid UTF-8: nothing under it was scanned; rename it (e.g. convmv -f latin1 -t utf8)")))
                }
                continue
            }
            var st = stat()
            if type == UInt8(DT_REG) || type == UInt8(DT_DIR) || type == UInt8(DT_LNK) || type == UInt8(DT_UNKNOWN) {
                // stat follows symbolic links: a link to a file is that file, a link to a folder that folder.
                guard stat(child, &st) == 0 else {
                    let reason = type == UInt8(DT_LNK) ? "broken symbolic link" : "cannot stat: \(String(cString: strerror(errno)))"
                    visit(ScanUnit(path: child, relativePath: rel, kind: .problem(.error, reason)))
                    continue
                }
                let fid = FileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
                switch st.st_mode & S_IFMT {
                case S_IFDIR: walkDirectory(child, relative: rel, id: fid)
                case S_IFREG: addFile(child, relative: rel, id: fid, links: Int(st.st_nlink), throughLink: type == UInt8(DT_LNK))
                default: continue // sockets, fifos, devices: never opened (a fifo would block the scan)
                }
            }
        }
    }
}

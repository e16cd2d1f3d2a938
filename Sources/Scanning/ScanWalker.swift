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
        while let e = readdir(dir) {
            let name = withUnsafePointer(to: e.pointee.d_name) { p in
                p.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
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

import CTensorIOKernels
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory mapping of a whole file, unmapped when the object goes away.
///
/// Weights are never read with `Data(contentsOf:options: .mappedIfSafe)`: on Linux that copies the file.
/// The mapping is `PROT_READ` and `MAP_PRIVATE`, so nothing can write through it to the user's file.
/// `init(copying:path:)` holds bytes already in memory instead, for parsing them through the same code.
/// Sendable: the mapping is PROT_READ (a heap copy is never written) and never changes until deinit: concurrent
/// reads of it are safe; the static tables are `Locked`.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let size: Int
    private let base: UnsafeMutableRawPointer?
    /// Whether `base` is a heap copy (`init(copying:path:)`) rather than a mapping.
    private let isHeapCopy: Bool
    /// Slot in the SIGBUS guard's table (mapped_guard.c), -1 when not registered.
    private let guardSlot: Int32
    /// Paths of live mappings by guard slot, to name the files a SIGBUS was absorbed in.
    private static let live = Locked<[Int32: String]>([:])
    /// Files a SIGBUS was absorbed in whose mapping is gone (recorded when it is unmapped).
    private static let faultedHistory = Locked<[String]>([])

    public init(path: String) throws(TensorIOError) {
        self.path = path
        isHeapCopy = false
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw .cannotOpen(path: path, reason: "not a regular file")
        }
        size = Int(st.st_size)
        if size == 0 {
            base = nil
            guardSlot = -1
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            throw .cannotOpen(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        base = p
        guardSlot = weightmark_register_mapping(p, size)
        if guardSlot >= 0 { Self.live.withLock { $0[guardSlot] = path } }
    }

    /// Throws `fileChanged` when the file shrank under the mapping (a SIGBUS was absorbed while reading it, or it is
    /// now shorter than when it was mapped).
    public func checkUnchanged() throws(TensorIOError) {
        guard !isHeapCopy, base != nil else { return }
        if guardSlot >= 0, weightmark_mapping_faulted(guardSlot) != 0 { throw .fileChanged(path: path) }
        var st = stat()
        if stat(path, &st) == 0, Int(st.st_size) < size { throw .fileChanged(path: path) }
    }

    /// Unless SWIFT_BACKTRACE asks for Swift's backtracer, a crash prints one line and ends the process at once, so
    /// that a bug can never hang a batch run while a backtrace is symbolicated. Call first thing in `main`.
    public static func installCrashHandler() {
        if ProcessInfo.processInfo.environment["SWIFT_BACKTRACE"] == nil { weightmark_install_crash_handler() }
    }

    /// SIGBUS faults absorbed in this process so far; compare before and after a piece of work.
    public static var faultCount: Int { weightmark_mapping_fault_total() }

    /// Files in which a SIGBUS was absorbed in this process, mapped or since unmapped.
    public static var faultedPaths: [String] {
        let mapped = live.withLock { $0.filter { weightmark_mapping_faulted($0.key) != 0 }.map(\.value) }
        return Array(Set(mapped + faultedHistory.withLock { $0 })).sorted()
    }

    /// Throws `fileChanged` for the first file of `source` (a model file or folder, see `belongs(_:to:)`) that shrank
    /// under its mapping since `faultCount` was `before`. Faults in other files (another model read by the same
    /// process at the same time: scan's workers, a library host) are not this source's business.
    public static func checkNoFaults(since before: Int, in source: String) throws(TensorIOError) {
        guard faultCount != before else { return }
        if let path = faultedPaths.first(where: { belongs($0, to: source) }) { throw .fileChanged(path: path) }
    }

    /// Whether the mapped file `path` is part of the model at `source`: the file itself, a file under the folder, or
    /// a sibling of the file (a GGUF split or a sharded checkpoint is named by one of its files). Errs towards yes.
    static func belongs(_ path: String, to source: String) -> Bool {
        func trimmed(_ p: String) -> String {
            var p = p
            while p.count > 1, p.hasSuffix("/") { p.removeLast() }
            return p
        }
        let path = trimmed(path), source = trimmed(source)
        if path == source || path.hasPrefix(source == "/" ? "/" : source + "/") { return true }
        var isFolder: ObjCBool = false
        if FileManager.default.fileExists(atPath: source, isDirectory: &isFolder), isFolder.boolValue { return false }
        let parent = (source as NSString).deletingLastPathComponent
        return (path as NSString).deletingLastPathComponent == parent
    }

    /// A read-only copy of `bytes` on the heap, named `path` in error messages.
    ///
    /// Lets the parsers run on bytes that are not in a file (the fuzz targets under `Fuzz/` feed them this
    /// way) through exactly the code a mapped file goes through. The copy is an exact-size heap block, so an
    /// address sanitizer flags any read past its end.
    public init(copying bytes: UnsafeRawBufferPointer, path: String) {
        self.path = path
        size = bytes.count
        isHeapCopy = true
        guardSlot = -1
        if size == 0 {
            base = nil
            return
        }
        let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        p.copyMemory(from: bytes.baseAddress!, byteCount: size)
        base = p
    }

    deinit {
        guard let base else { return }
        if isHeapCopy { base.deallocate(); return }
        if guardSlot >= 0 {
            if weightmark_mapping_faulted(guardSlot) != 0 { Self.faultedHistory.withLock { $0.append(path) } }
            weightmark_unregister_mapping(guardSlot)
            Self.live.withLock { $0[guardSlot] = nil }
        }
        munmap(base, size)
    }

    /// The whole file. Valid only while `self` is alive; keep the pointer inside the closure.
    @inlinable
    public func withBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(bytes)
    }

    @usableFromInline
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }

    /// Hints that `range` will be read sequentially once.
    public func adviseSequential(_ range: Range<Int>) { advise(range, MADV_SEQUENTIAL) }

    /// Tells the kernel the pages of `range` are no longer needed, so clean pages leave RSS.
    public func release(_ range: Range<Int>) { advise(range, MADV_DONTNEED) }

    private func advise(_ range: Range<Int>, _ advice: Int32) {
        // Advice on heap pages would discard them (MADV_DONTNEED zeroes anonymous memory), neighbours included.
        guard let base, !isHeapCopy, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = range.lowerBound / page * page
        let end = min(size, range.upperBound)
        guard end > start else { return }
        _ = madvise(base + start, end - start, advice)
    }
}

import CTensorIOKernels
import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a file so that the destination is either absent or complete: data goes to a temporary file
/// in the same directory, is fsynced, and is then moved into place (the directory is fsynced too).
///
/// Without `overwrite`, the final step is `link(2)` + `unlink(2)`, which fails atomically if the
/// destination appeared in the meantime, so an existing user file is never replaced.
public final class AtomicFileWriter {
    public let destination: String
    public let overwrite: Bool
    private let temporaryPath: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    private let bufferLimit = 8 << 20
    public private(set) var bytesWritten = 0
    private var finished = false
    /// Sees every byte written, in file order (e.g. to hash the output without reading it back).
    public var observer: ((UnsafeRawBufferPointer) -> Void)?
    /// Permission bits of the finished file. The temporary file is created 0600 (mkstemp) and keeps that mode
    /// until `commit` sets this one, before the file gets its final name: a secret written with 0600 is never
    /// readable by others, not even for a moment.
    public let mode: mode_t

    /// - Parameter unbuffered: write large files with direct I/O where the system allows it (Linux O_DIRECT),
    ///   through aligned buffers handed to a background writer: no copy into the page cache, and the disk
    ///   works while the caller produces the next bytes. Falls back to ordinary writes when refused.
    ///   - mode: permission bits of the finished file (0644 by default; 0600 for secrets).
    public init(destination given: String, overwrite: Bool, unbuffered: Bool = false, mode: mode_t = 0o644) throws {
        let destination = AtomicFileWriter.trimmingTrailingSlashes(given)
        self.destination = destination
        self.overwrite = overwrite
        self.mode = mode
        if !overwrite, access(destination, F_OK) == 0 { throw TensorIOError.outputExists(path: destination) }
        let dir = AtomicFileWriter.directory(of: destination)
        let base = destination.split(separator: "/").last.map(String.init) ?? "out"
        var template = Array("\(dir)/.\(base).tmp-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw TensorIOError.writeFailed(path: destination, reason: "cannot create a temporary file in \(dir): \(String(cString: strerror(errno)))")
        }
        self.fd = fd
        temporaryPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        // Removed if the process is interrupted before commit (SIGINT/SIGTERM/SIGHUP).
        cleanupSlot = weightmark_register_temporary(temporaryPath)
        if unbuffered, weightmark_set_direct_io(fd, 1) == 0 {
            direct = DirectWriter(fd: fd, path: destination)
        } else {
            buffer.reserveCapacity(bufferLimit)
        }
    }

    private var direct: DirectWriter?
    private var cleanupSlot: Int32 = -1

    deinit {
        if !finished {
            // An abandoned write (an error upstream): let queued direct writes finish before the descriptor closes,
            // so none of them lands on a reused descriptor.
            direct?.waitForPendingWrites()
            if fd >= 0 { close(fd) }
            unlink(temporaryPath)
        }
        weightmark_unregister_temporary(cleanupSlot)
    }

    static func directory(of given: String) -> String {
        let path = trimmingTrailingSlashes(given)
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let d = String(path[..<slash])
        return d.isEmpty ? "/" : d
    }

    /// `out/` → `out` (the root stays `/`): an output named with a trailing slash is still written next to itself.
    public static func trimmingTrailingSlashes(_ path: String) -> String {
        var p = Substring(path)
        while p.count > 1 && p.hasSuffix("/") { p = p.dropLast() }
        return String(p)
    }

    /// Appends bytes.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        observer?(bytes)
        if let direct {
            try direct.append(bytes)
            bytesWritten += bytes.count
            return
        }
        if buffer.count + bytes.count > bufferLimit { try flush() }
        if bytes.count >= bufferLimit {
            try writeAll(bytes)
        } else {
            buffer.append(contentsOf: bytes)
        }
        bytesWritten += bytes.count
    }

    /// Appends the bytes of `placed`. With direct I/O, when `placed.lead` equals the file position modulo
    /// the page size, its pages are written from the caller's buffer without a copy; otherwise they are copied.
    public func write(placed: PlacedBytes) throws {
        if let direct, placed.lead == bytesWritten % PlacedBytes.alignment {
            observer?(placed.bytes)
            try direct.append(placed: placed)
            bytesWritten += placed.count
            return
        }
        try write(placed.bytes)
    }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { b in try write(b) }
    }

    private func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { b in try writeAll(b) }
        buffer.removeAll(keepingCapacity: true)
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw TensorIOError.writeFailed(path: destination, reason: String(cString: strerror(errno)))
            }
            done += n
        }
        flushedBytes += bytes.count
        // Start writeback of each full stretch now, so the disk works while the next tensors are computed
        // and `commit`'s fsync waits only for the tail (the kernel would otherwise wait for the dirty limit).
        if flushedBytes - writebackStart >= AtomicFileWriter.writebackStretch {
            _ = weightmark_start_writeback(fd, Int64(writebackStart), Int64(flushedBytes - writebackStart))
            writebackStart = flushedBytes
        }
    }

    /// Bytes handed to the kernel so far, and where the range not yet sent to writeback starts.
    private var flushedBytes = 0
    private var writebackStart = 0
    static let writebackStretch = 32 << 20

    /// Flushes, fsyncs and moves the file into place.
    public func commit() throws {
        if let direct {
            try direct.finish(size: bytesWritten)
        } else {
            try flush()
        }
        guard fsync(fd) == 0 else { throw TensorIOError.writeFailed(path: destination, reason: "fsync: \(String(cString: strerror(errno)))") }
        guard fchmod(fd, mode) == 0 else {
            throw TensorIOError.writeFailed(path: destination, reason: "fchmod: \(String(cString: strerror(errno)))")
        }
        close(fd)
        fd = -1
        if overwrite {
            guard rename(temporaryPath, destination) == 0 else {
                throw TensorIOError.writeFailed(path: destination, reason: "rename: \(String(cString: strerror(errno)))")
            }
        } else {
            guard link(temporaryPath, destination) == 0 else {
                let e = errno
                if e == EEXIST { throw TensorIOError.outputExists(path: destination) }
                throw TensorIOError.writeFailed(path: destination, reason: "link: \(String(cString: strerror(e)))")
            }
            unlink(temporaryPath)
        }
        finished = true
        weightmark_unregister_temporary(cleanupSlot)
        cleanupSlot = -1
        AtomicFileWriter.syncDirectory(AtomicFileWriter.directory(of: destination))
    }

    static func syncDirectory(_ dir: String) {
        let dfd = open(dir, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// Writes `bytes` to `path` atomically, with permission bits `mode`.
    public static func write(_ bytes: [UInt8], to path: String, overwrite: Bool, mode: mode_t = 0o644) throws {
        let w = try AtomicFileWriter(destination: path, overwrite: overwrite, mode: mode)
        try w.write(bytes)
        try w.commit()
    }
}

/// Direct-I/O writing for `AtomicFileWriter`: bytes are gathered into 4096-aligned 8 MB buffers, each full
/// buffer is written by a serial background queue with `pwrite` while the caller fills the next (two in
/// flight at most), and the last partial buffer is zero-padded to the alignment and the file truncated to
/// its real size. A filesystem that accepts O_DIRECT but refuses an aligned write (EINVAL) gets ordinary
/// writes from then on.
/// Sendable: one producer thread calls the methods and alone touches `current`, `filled` and `offset`; the write
/// queue shares only `failure` and `pool`, under `lock`.
private final class DirectWriter: @unchecked Sendable {
    static let alignment = PlacedBytes.alignment, chunk = 8 << 20, inFlight = 2
    let fd: Int32
    let path: String
    private var current: UnsafeMutableRawPointer
    private var filled = 0
    private var offset = 0
    private var pool: [UnsafeMutableRawPointer] = []
    private var all: [UnsafeMutableRawPointer] = []
    private let lock = NSLock()
    private let slots = DispatchSemaphore(value: DirectWriter.inFlight)
    private let queue = DispatchQueue(label: "weightmark.direct-io")
    private var failure: TensorIOError?

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
        for _ in 0...DirectWriter.inFlight {
            var p: UnsafeMutableRawPointer?
            precondition(posix_memalign(&p, DirectWriter.alignment, DirectWriter.chunk) == 0 && p != nil, "out of memory")
            all.append(p!)
        }
        current = all[0]
        pool = Array(all.dropFirst())
    }

    // Every queued write holds a reference to the writer, so deinit runs only once none is pending; it may run
    // on the queue's own thread (the last write's closure released last), where a `queue.sync` would trap.
    deinit {
        all.forEach { free($0) }
    }

    /// Returns once every queued write has completed.
    func waitForPendingWrites() { queue.sync {} }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let n = min(bytes.count - done, DirectWriter.chunk - filled)
            (current + filled).copyMemory(from: bytes.baseAddress! + done, byteCount: n)
            filled += n
            done += n
            if filled == DirectWriter.chunk { try submit(length: filled) }
        }
    }

    /// Appends `placed` without copying its whole pages (precondition: `placed.lead` is the file position
    /// modulo `alignment`). The partial page already gathered is copied in front of the data (into the lead),
    /// the whole pages are written from the caller's buffer by the background queue, which keeps `placed`
    /// alive until then, and the last partial page is copied into a gathering buffer.
    func append(placed: PlacedBytes) throws {
        precondition(placed.lead == filled % DirectWriter.alignment && Int(bitPattern: placed.base) % DirectWriter.alignment == 0)
        let pageStart = filled - placed.lead
        placed.base.copyMemory(from: current + pageStart, byteCount: placed.lead)
        if pageStart > 0 {
            try submit(length: pageStart)
        } else {
            filled = 0
        }
        let total = placed.lead + placed.count
        let whole = total / DirectWriter.alignment * DirectWriter.alignment
        // The tail goes to the gathering buffer before the pages are queued: once queued, `placed` may be released.
        current.copyMemory(from: placed.base + whole, byteCount: total - whole)
        filled = total - whole
        if whole > 0 { try enqueue(placed.base, length: whole) { withExtendedLifetime(placed) {} } }
    }

    /// Writes the last buffer, waits for the queue, and truncates the padding away.
    func finish(size: Int) throws {
        if filled > 0 {
            let padded = (filled + DirectWriter.alignment - 1) / DirectWriter.alignment * DirectWriter.alignment
            (current + filled).initializeMemory(as: UInt8.self, repeating: 0, count: padded - filled)
            try submit(length: padded)
        }
        queue.sync {}
        try lock.withLock { if let failure { throw failure } }
        guard ftruncate(fd, off_t(size)) == 0 else {
            throw TensorIOError.writeFailed(path: path, reason: "ftruncate: \(String(cString: strerror(errno)))")
        }
    }

    /// Queues the gathering buffer's first `length` bytes and continues in a free one.
    private func submit(length: Int) throws {
        // Unsafe: ownership of the buffer passes to the write queue here: this thread takes a different one from the
        // pool and touches this one again only after the queue has put it back (under `lock`).
        nonisolated(unsafe) let buffer = current
        filled = 0
        try enqueue(buffer, length: length) { [self] in lock.withLock { pool.append(buffer) } }
        current = lock.withLock { pool.removeLast() }
    }

    /// Has the background queue write `length` bytes of `buffer` at the current offset, then call `written`
    /// (the buffer may be reused or released from then on); returns once at most `inFlight` writes are pending.
    private func enqueue(_ buffer: UnsafeMutableRawPointer, length: Int, written: @escaping @Sendable () -> Void) throws {
        try lock.withLock { if let failure { throw failure } }
        // Unsafe: the caller hands the buffer over until `written` runs: only the write queue reads it in between.
        nonisolated(unsafe) let buffer = buffer
        let at = offset, fd = fd, path = path
        offset += length
        queue.async { [self] in
            let error = DirectWriter.pwriteAll(fd: fd, buffer, length, at: at, path: path)
            lock.withLock { if failure == nil, let error { failure = error } }
            written()
            slots.signal()
        }
        slots.wait()
    }

    private static func pwriteAll(fd: Int32, _ buffer: UnsafeMutableRawPointer, _ length: Int, at offset: Int, path: String) -> TensorIOError? {
        var done = 0
        var retriedBuffered = false
        while done < length {
            let n = pwrite(fd, buffer + done, length - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EINVAL, !retriedBuffered, weightmark_set_direct_io(fd, 0) == 0 { retriedBuffered = true; continue }
                return .writeFailed(path: path, reason: String(cString: strerror(errno)))
            }
            done += n
        }
        return nil
    }
}

/// `count` bytes held at offset `lead` of a buffer that starts on a page boundary (`base`, 4096-aligned,
/// `lead + count` bytes long at least), so a direct-I/O writer can write its whole pages in place when the
/// file position modulo 4096 equals `lead`. The writer may overwrite the `lead` bytes in front of the data,
/// and keeps `owner` alive until it has written from the buffer.
/// Sendable: a view of a buffer its owner keeps alive and does not write while the writer reads it (see `owner`).
public struct PlacedBytes: @unchecked Sendable {
    public static let alignment = 4096
    public let base: UnsafeMutableRawPointer
    public let lead: Int
    public let count: Int
    public let owner: AnyObject

    public init(base: UnsafeMutableRawPointer, lead: Int, count: Int, owner: AnyObject) {
        precondition(Int(bitPattern: base) % PlacedBytes.alignment == 0 && (0..<PlacedBytes.alignment).contains(lead))
        self.base = base; self.lead = lead; self.count = count; self.owner = owner
    }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base + lead, count: count) }
}

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

    public init(destination: String, overwrite: Bool) throws {
        self.destination = destination
        self.overwrite = overwrite
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
        buffer.reserveCapacity(bufferLimit)
    }

    deinit {
        if !finished {
            if fd >= 0 { close(fd) }
            unlink(temporaryPath)
        }
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let d = String(path[..<slash])
        return d.isEmpty ? "/" : d
    }

    /// Appends bytes.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        observer?(bytes)
        if buffer.count + bytes.count > bufferLimit { try flush() }
        if bytes.count >= bufferLimit {
            try writeAll(bytes)
        } else {
            buffer.append(contentsOf: bytes)
        }
        bytesWritten += bytes.count
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
    }

    /// Flushes, fsyncs and moves the file into place.
    public func commit() throws {
        try flush()
        guard fsync(fd) == 0 else { throw TensorIOError.writeFailed(path: destination, reason: "fsync: \(String(cString: strerror(errno)))") }
        fchmod(fd, 0o644)
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
        AtomicFileWriter.syncDirectory(AtomicFileWriter.directory(of: destination))
    }

    static func syncDirectory(_ dir: String) {
        let dfd = open(dir, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// Writes `bytes` to `path` atomically.
    public static func write(_ bytes: [UInt8], to path: String, overwrite: Bool) throws {
        let w = try AtomicFileWriter(destination: path, overwrite: overwrite)
        try w.write(bytes)
        try w.commit()
    }
}

import CZlib
import Foundation

/// A memory-mapped ZIP archive: its checked central directory, stored members read in place, deflated
/// members inflated into exactly their declared size.
/// Sendable: immutable after init (a read-only mapping and its parsed directory); inflating fills only new arrays.
public final class ZipArchive: @unchecked Sendable {
    public let mapping: MappedFile
    public let directory: ZipDirectory
    public var path: String { mapping.path }

    /// Maps `path` and reads its central directory.
    public init(path: String) throws(TensorIOError) {
        mapping = try MappedFile(path: path)
        do {
            directory = try mapping.withBytes { (b) throws(ZipFormatError) in try ZipDirectory.parse(file: b) }
        } catch {
            throw .invalidZip(path: path, reason: error)
        }
    }

    /// Calls `body` with the bytes of a stored entry, in place in the mapping.
    /// - Precondition: `entry.method == .stored` and `entry` comes from `directory`.
    public func withStoredBytes<R, E: Error>(of entry: ZipEntry, _ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        precondition(entry.method == .stored)
        return try mapping.withBytes { (all) throws(E) -> R in try body(UnsafeRawBufferPointer(rebasing: all[entry.dataRange])) }
    }

    /// The entry's uncompressed bytes (copied; inflated when deflated), checked against its CRC-32.
    public func contents(of entry: ZipEntry) throws(TensorIOError) -> [UInt8] {
        do {
            return try mapping.withBytes { (all) throws(ZipFormatError) in
                try ZipArchive.contents(of: entry, in: UnsafeRawBufferPointer(rebasing: all[entry.dataRange]))
            }
        } catch {
            throw .invalidZip(path: path, reason: error)
        }
    }

    /// Uncompresses `data` (the entry's bytes) into exactly `entry.uncompressedSize` bytes and checks the CRC-32.
    /// Works on any buffer, so fuzz targets can call it without a file.
    public static func contents(of entry: ZipEntry, in data: UnsafeRawBufferPointer) throws(ZipFormatError) -> [UInt8] {
        let out: [UInt8]
        switch entry.method {
        case .stored:
            out = Array(data)
        case .deflated:
            out = try inflate(data, expectedSize: entry.uncompressedSize, name: entry.name)
        }
        let crc = crc32(out)
        guard crc == entry.crc32 else { throw .crcMismatch(name: entry.name, expected: entry.crc32, actual: crc) }
        return out
    }

    /// CRC-32 (ZIP's polynomial) of `bytes`, by zlib.
    public static func crc32(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { b in
            var crc: uLong = CZlib.crc32(0, nil, 0)
            var offset = 0
            while offset < b.count {
                let n = min(b.count - offset, Int(UInt32.max >> 1))
                crc = CZlib.crc32(crc, b.baseAddress!.assumingMemoryBound(to: Bytef.self) + offset, uInt(n))
                offset += n
            }
            return UInt32(truncatingIfNeeded: crc)
        }
    }

    /// Raw-deflate decompression into a buffer of exactly `expectedSize` bytes: output beyond it, or a stream
    /// that ends early or is corrupt, is an error (memory is bounded by the declared, already checked size).
    /// The most a member may inflate to in memory: a quarter of the memory this process may use (physical memory, or
    /// the address-space limit when one is set). Above it a member is refused before anything is allocated — a deflate
    /// bomb (8 MB that claims 8 GiB), or a member too large to read inflated — so a sweep records an error and goes on.
    public static var inflationBudget: Int { budgetLock.withLock { budgetLimit.map { min($0, memoryBudget) } ?? memoryBudget } }

    /// Lowers the budget for this process (scan: a sweep reads many files it knows nothing about; it keeps its peak
    /// memory small and reports a larger deflated member as an error to check with `detect` alone).
    public static func limitInflation(to bytes: Int) { budgetLock.withLock { budgetLimit = max(1 << 20, bytes) } }

    private static let budgetLock = NSLock()
    /// Unsafe: set by `limitInflation`; read and written only under `budgetLock`.
    nonisolated(unsafe) private static var budgetLimit: Int?

    private static let memoryBudget: Int = {
        var limit = Int(ProcessInfo.processInfo.physicalMemory)
        var rl = rlimit()
        if getrlimit(Int32(RLIMIT_AS.rawValue), &rl) == 0, rl.rlim_cur < UInt64(Int.max) {
            limit = min(limit, Int(rl.rlim_cur))
        }
        return max(64 << 20, limit / 4)
    }()

    static func inflate(_ input: UnsafeRawBufferPointer, expectedSize: Int, name: String) throws(ZipFormatError) -> [UInt8] {
        guard expectedSize <= inflationBudget else {
            throw .inflateFailed(name: name, reason: "it declares \(expectedSize) bytes uncompressed, more than the \(inflationBudget) bytes this process inflates in memory (a quarter of the memory it may use): a deflate bomb, or a member to store uncompressed")
        }
        let (out, status) = try inflate(input, capacity: expectedSize + 1, name: name)
        guard status == Z_STREAM_END else {
            if out.count > expectedSize {
                throw .inflateFailed(name: name, reason: "it inflates to more than the declared \(expectedSize) bytes")
            }
            throw .inflateFailed(name: name, reason: status == Z_BUF_ERROR ? "the compressed stream ends early" : "corrupt deflate data (zlib status \(status))")
        }
        guard out.count == expectedSize else {
            throw .inflateFailed(name: name, reason: "it inflates to \(out.count) bytes, not the declared \(expectedSize)")
        }
        return out
    }

    /// The first `count` bytes of a raw-deflate stream (fewer if the stream ends first).
    public static func inflatePrefix(_ input: UnsafeRawBufferPointer, count: Int, name: String) throws(ZipFormatError) -> [UInt8] {
        let (out, status) = try inflate(input, capacity: count, name: name)
        guard status == Z_STREAM_END || status == Z_OK || out.count == count else {
            throw .inflateFailed(name: name, reason: status == Z_BUF_ERROR ? "the compressed stream ends early" : "corrupt deflate data (zlib status \(status))")
        }
        return out
    }

    /// Inflates until `capacity` bytes are produced, the stream ends, or an error; returns the bytes and zlib's last status.
    private static func inflate(_ input: UnsafeRawBufferPointer, capacity: Int, name: String) throws(ZipFormatError) -> ([UInt8], Int32) {
        var stream = z_stream()
        guard inflateInit2_(&stream, -MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw .inflateFailed(name: name, reason: "zlib could not start")
        }
        defer { inflateEnd(&stream) }
        var status: Int32 = Z_OK
        var produced = 0
        var out = [UInt8](repeating: 0, count: capacity)
        out.withUnsafeMutableBytes { o in
            var consumed = 0
            while produced < o.count {
                let inChunk = min(input.count - consumed, Int(UInt32.max >> 1))
                let outChunk = min(o.count - produced, Int(UInt32.max >> 1))
                stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self)).map { $0 + consumed }
                stream.avail_in = uInt(inChunk)
                stream.next_out = o.baseAddress!.assumingMemoryBound(to: Bytef.self) + produced
                stream.avail_out = uInt(outChunk)
                status = CZlib.inflate(&stream, Z_NO_FLUSH)
                let used = inChunk - Int(stream.avail_in), made = outChunk - Int(stream.avail_out)
                consumed += used
                produced += made
                if status != Z_OK { break }
                if used == 0 && made == 0 { status = Z_BUF_ERROR; break }
            }
        }
        out.removeLast(out.count - produced)
        return (out, status)
    }
}

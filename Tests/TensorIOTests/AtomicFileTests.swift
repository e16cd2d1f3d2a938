import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

@Suite("atomic file writer")
struct AtomicFileTests {
    /// Bytes that differ with their position (a misplaced or repeated block would show), filled word-wise.
    static func positionDependentBytes(_ count: Int, salt: UInt64) -> [UInt8] {
        let words = (0..<((count + 7) / 8)).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 ^ salt }
        // Copied inside the closure: the buffer pointer is valid only there (an optimized build may free `words` after it).
        return words.withUnsafeBytes { Array($0.prefix(count)) }
    }

    /// Fresh folders in the system temporary directory and, where it exists, in /dev/shm (tmpfs refuses
    /// O_DIRECT: the writer must fall back to ordinary writes there).
    static func directories(_ label: String) throws -> [String] {
        var dirs = [Fixtures.temporaryDirectory(label)]
        if FileManager.default.fileExists(atPath: "/dev/shm") {
            let shm = "/dev/shm/wm-\(label)-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: shm, withIntermediateDirectories: true)
            dirs.append(shm)
        }
        return dirs
    }

    /// Sizes around the direct-I/O alignment (4096) and buffer (8 MB) boundaries, written in uneven pieces.
    @Test("unbuffered (direct I/O) and buffered writes give the same bytes, size and observer stream",
          arguments: [0, 1, 4095, 4096, 4097, (8 << 20) - 1, 8 << 20, (8 << 20) + 4097, 2 * (8 << 20) + 12345])
    func sameBytes(_ size: Int) throws {
        let data = Self.positionDependentBytes(size, salt: UInt64(size))
        let dirs = try Self.directories("atomic")
        defer { dirs.forEach { try? FileManager.default.removeItem(atPath: $0) } }
        for dir in dirs {
            for unbuffered in [false, true] {
                let path = "\(dir)/f-\(unbuffered).bin"
                let writer = try AtomicFileWriter(destination: path, overwrite: false, unbuffered: unbuffered)
                var seen = 0
                writer.observer = { seen += $0.count }
                var at = 0, piece = 1
                while at < size {
                    let end = min(size, at + piece)
                    try data[at..<end].withUnsafeBytes { try writer.write($0) }
                    at = end
                    piece = piece * 7 % 3_000_001 + 1   // uneven pieces, some above the 8 MB buffer
                }
                try writer.commit()
                #expect(seen == size)
                #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(data), "\(dir), unbuffered: \(unbuffered)")
                // Nothing else is left in the directory (no temporary files).
                #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix(".") }.isEmpty)
                // No clobbering without overwrite.
                #expect(throws: TensorIOError.self) { try AtomicFileWriter(destination: path, overwrite: false, unbuffered: unbuffered) }
            }
        }
    }

    /// Owns a page-aligned buffer and counts its releases (the writer must let every one go).
    final class Owner {
        static let lock = NSLock()
        nonisolated(unsafe) static var live = 0
        let storage: UnsafeMutableRawBufferPointer
        init(size: Int) {
            storage = .allocate(byteCount: max(1, size), alignment: PlacedBytes.alignment)
            Owner.lock.withLock { Owner.live += 1 }
        }
        deinit {
            storage.deallocate()
            Owner.lock.withLock { Owner.live -= 1 }
        }
    }

    @Test("placed writes, in place when their lead matches the file position and copied otherwise, give the same bytes")
    func placedWrites() throws {
        // Pieces: ordinary writes and placed ones of every kind: within a page, across pages, above the 8 MB
        // buffer, whole pages only, with the lead right (written in place) or wrong (copied).
        let pieces: [(size: Int, placed: Bool, rightLead: Bool)] = [
            (100, false, false), (10, true, true), (5000, true, true), (3, false, false), ((8 << 20) + 777, true, true),
            (4096, true, false), (12_000, true, true), (1, true, true), (70_000, false, false), (3 * 4096, true, true)]
        let total = pieces.reduce(0) { $0 + $1.size }
        let data = Self.positionDependentBytes(total, salt: 7)
        let dirs = try Self.directories("placed")
        defer { dirs.forEach { try? FileManager.default.removeItem(atPath: $0) } }
        for dir in dirs {
            for unbuffered in [false, true] {
                let path = "\(dir)/p-\(unbuffered).bin"
                do {
                    let writer = try AtomicFileWriter(destination: path, overwrite: false, unbuffered: unbuffered)
                    var observed: [UInt8] = []
                    writer.observer = { observed.append(contentsOf: $0) }
                    var at = 0
                    for piece in pieces {
                        let bytes = data[at..<(at + piece.size)]
                        if piece.placed {
                            let lead = piece.rightLead ? at % PlacedBytes.alignment : (at + 100) % PlacedBytes.alignment
                            let owner = Owner(size: lead + piece.size)
                            bytes.withUnsafeBytes { owner.storage.baseAddress!.advanced(by: lead).copyMemory(from: $0.baseAddress!, byteCount: piece.size) }
                            try writer.write(placed: PlacedBytes(base: owner.storage.baseAddress!, lead: lead, count: piece.size, owner: owner))
                        } else {
                            try bytes.withUnsafeBytes { try writer.write($0) }
                        }
                        at += piece.size
                    }
                    try writer.commit()
                    #expect(observed == data, "\(dir), unbuffered: \(unbuffered)")
                }
                #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(data), "\(dir), unbuffered: \(unbuffered)")
                #expect(Owner.live == 0, "every placed buffer is released after the write")
            }
        }
    }
}

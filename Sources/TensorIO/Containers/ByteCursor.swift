/// Bounds-checked little-endian reads from a raw buffer, for the container parsers (ZIP, pickle, .npy).
///
/// Every read checks its range first and reports the absolute offset it failed at; values are loaded
/// with `loadUnaligned`, never `load(as:)`, because file bytes carry no alignment.
struct ByteCursor {
    let bytes: UnsafeRawBufferPointer
    var offset: Int

    init(_ bytes: UnsafeRawBufferPointer, offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    var remaining: Int { bytes.count - offset }
    var isAtEnd: Bool { offset >= bytes.count }

    /// Whether `count` bytes starting at `at` lie inside the buffer (no overflow).
    func contains(_ at: Int, count: Int) -> Bool {
        guard at >= 0, count >= 0 else { return false }
        let (end, overflow) = at.addingReportingOverflow(count)
        return !overflow && end <= bytes.count
    }

    /// A little-endian integer at an absolute offset, or nil when it does not fit.
    func integer<T: FixedWidthInteger>(at: Int, as: T.Type = T.self) -> T? {
        guard contains(at, count: MemoryLayout<T>.size) else { return nil }
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: T.self))
    }

    /// Reads a little-endian integer and advances, or returns nil (not advancing) at the end of the buffer.
    mutating func read<T: FixedWidthInteger>(_ type: T.Type) -> T? {
        guard let v = integer(at: offset, as: T.self) else { return nil }
        offset += MemoryLayout<T>.size
        return v
    }

    /// The next `count` bytes, advancing, or nil if fewer remain.
    mutating func read(count: Int) -> UnsafeRawBufferPointer? {
        guard contains(offset, count: count) else { return nil }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
    }
}

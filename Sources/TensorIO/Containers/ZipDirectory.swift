/// One member of a ZIP archive, located and checked: where its data starts in the file and how it is stored.
public struct ZipEntry: Sendable, Equatable {
    public enum Method: Sendable, Equatable {
        case stored
        case deflated
    }

    public var name: String
    public var method: Method
    /// Absolute offset of the entry's (possibly compressed) data.
    public var dataOffset: Int
    public var compressedSize: Int
    public var uncompressedSize: Int
    public var crc32: UInt32
    /// Absolute offset of the entry's local header.
    public var localHeaderOffset: Int

    /// The data's byte range in the file.
    public var dataRange: Range<Int> { dataOffset..<(dataOffset + compressedSize) }
}

/// The central directory of a ZIP archive, read from the file's bytes with every field checked.
///
/// Why not ZIPFoundation: WeightMark reads tensors in place from a memory mapping, which needs each entry's
/// absolute data offset (local header offset + local header length); ZIPFoundation reads entries through a file
/// handle into `Data` chunks and does not expose that. This reader handles exactly what PyTorch and NumPy
/// write (stored and deflated entries, ZIP64 end records and extra fields, data descriptors, comments) and
/// rejects the rest: encryption, other compression methods, duplicate names, names that differ between the
/// central and local headers, entries that overlap or run past the central directory, stored entries whose
/// two sizes differ, and deflated entries that claim more than deflate's 1032:1 maximum ratio.
///
/// It never allocates in proportion to a declared size before checking it against the file.
public struct ZipDirectory: Sendable {
    public var entries: [ZipEntry]
    private var byName: [String: Int]

    public func entry(named name: String) -> ZipEntry? { byName[name].map { entries[$0] } }

    static let endSignature: UInt32 = 0x0605_4B50
    static let zip64LocatorSignature: UInt32 = 0x0706_4B50
    static let zip64EndSignature: UInt32 = 0x0606_4B50
    static let centralSignature: UInt32 = 0x0201_4B50
    static let localSignature: UInt32 = 0x0403_4B50

    /// Whether `bytes` starts like a ZIP archive (a local header, or the end record of an empty archive).
    public static func looksLikeZip(_ prefix: UnsafeRawBufferPointer) -> Bool {
        let c = ByteCursor(prefix)
        guard let sig = c.integer(at: 0, as: UInt32.self) else { return false }
        return sig == localSignature || sig == endSignature
    }

    /// Parses and checks the central directory of the archive in `file` (the whole file's bytes).
    /// - Throws: `ZipFormatError` naming the entry and the byte offset.
    public static func parse(file: UnsafeRawBufferPointer) throws(ZipFormatError) -> ZipDirectory {
        let c = ByteCursor(file)
        // The end record is 22 bytes plus a comment of up to 65,535 bytes; it must end exactly at the end of the file.
        var eocd: Int?
        var p = file.count - 22
        let lowest = max(0, file.count - 22 - 65_535)
        while p >= lowest {
            if c.integer(at: p, as: UInt32.self) == endSignature,
               let commentLength = c.integer(at: p + 20, as: UInt16.self), p + 22 + Int(commentLength) == file.count {
                eocd = p
                break
            }
            p -= 1
        }
        guard let eocd else { throw .noEndOfCentralDirectory }
        var count = UInt64(c.integer(at: eocd + 10, as: UInt16.self)!)
        var cdSize = UInt64(c.integer(at: eocd + 12, as: UInt32.self)!)
        var cdOffset = UInt64(c.integer(at: eocd + 16, as: UInt32.self)!)
        var cdLimit = eocd
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF
            || c.integer(at: eocd - 20, as: UInt32.self) == zip64LocatorSignature {
            let loc = eocd - 20
            guard loc >= 0, c.integer(at: loc, as: UInt32.self) == zip64LocatorSignature,
                  let recordOffset64 = c.integer(at: loc + 8, as: UInt64.self),
                  let record = Int(exactly: recordOffset64), record >= 0, record <= loc - 56,
                  c.integer(at: record, as: UInt32.self) == zip64EndSignature,
                  let n = c.integer(at: record + 32, as: UInt64.self),
                  let size = c.integer(at: record + 40, as: UInt64.self),
                  let offset = c.integer(at: record + 48, as: UInt64.self) else {
                throw .invalidZip64Locator(offset: max(0, loc))
            }
            count = n; cdSize = size; cdOffset = offset
            cdLimit = record
        }
        guard let start = Int(exactly: cdOffset), let size = Int(exactly: cdSize),
              case let (end, o) = start.addingReportingOverflow(size), !o, end <= cdLimit else {
            throw .centralDirectoryOutOfBounds(offset: cdOffset, size: cdSize, fileSize: file.count)
        }
        // Each central entry takes at least 46 bytes: a count beyond that is a lie, caught before any allocation.
        guard count <= UInt64(size / 46) else { throw .entryCountMismatch(declared: count, found: size / 46) }

        var entries: [ZipEntry] = []
        entries.reserveCapacity(Int(count))
        var byName: [String: Int] = [:]
        var cursor = ByteCursor(UnsafeRawBufferPointer(rebasing: file[0..<end]), offset: start)
        var index = 0
        while cursor.offset < end {
            let at = cursor.offset
            guard cursor.contains(at, count: 46) else { throw .truncatedCentralDirectory(entry: index, offset: at) }
            guard cursor.read(UInt32.self) == centralSignature else { throw .badCentralSignature(entry: index, offset: at) }
            let fixed = cursor.read(count: 42)!
            let f = ByteCursor(fixed)
            let flags: UInt16 = f.integer(at: 4)!
            let method: UInt16 = f.integer(at: 6)!
            let crc: UInt32 = f.integer(at: 12)!
            var compressed = UInt64(f.integer(at: 16, as: UInt32.self)!)
            var uncompressed = UInt64(f.integer(at: 20, as: UInt32.self)!)
            let nameLength = Int(f.integer(at: 24, as: UInt16.self)!)
            let extraLength = Int(f.integer(at: 26, as: UInt16.self)!)
            let commentLength = Int(f.integer(at: 28, as: UInt16.self)!)
            var localOffset = UInt64(f.integer(at: 38, as: UInt32.self)!)
            guard let nameBytes = cursor.read(count: nameLength), let extra = cursor.read(count: extraLength),
                  cursor.read(count: commentLength) != nil else {
                throw .truncatedCentralDirectory(entry: index, offset: at)
            }
            guard nameLength > 0, let name = String(validating: nameBytes, as: UTF8.self), !name.contains("\0") else {
                throw .invalidName(entry: index, offset: at)
            }
            // ZIP64 extra field (id 1): only the fields saturated in the fixed header are present, in this order.
            let needUncompressed = uncompressed == 0xFFFF_FFFF, needCompressed = compressed == 0xFFFF_FFFF
            let needOffset = localOffset == 0xFFFF_FFFF
            if needUncompressed || needCompressed || needOffset {
                var e = ByteCursor(extra)
                var found = false
                while e.remaining >= 4 {
                    let id = e.read(UInt16.self)!, length = Int(e.read(UInt16.self)!)
                    guard let body = e.read(count: length) else { break }
                    guard id == 1 else { continue }
                    var b = ByteCursor(body)
                    if needUncompressed { guard let v = b.read(UInt64.self) else { throw .missingZip64Field(name: name, field: "the uncompressed size") }; uncompressed = v }
                    if needCompressed { guard let v = b.read(UInt64.self) else { throw .missingZip64Field(name: name, field: "the compressed size") }; compressed = v }
                    if needOffset { guard let v = b.read(UInt64.self) else { throw .missingZip64Field(name: name, field: "the local header offset") }; localOffset = v }
                    found = true
                    break
                }
                guard found else {
                    throw .missingZip64Field(name: name, field: needOffset ? "the local header offset" : needCompressed ? "the compressed size" : "the uncompressed size")
                }
            }
            guard flags & 1 == 0 else { throw .encrypted(name: name) }
            let kind: ZipEntry.Method
            switch method {
            case 0: kind = .stored
            case 8: kind = .deflated
            default: throw .unsupportedCompression(name: name, method: method)
            }
            if kind == .stored, compressed != uncompressed {
                throw .storedSizeMismatch(name: name, compressed: compressed, uncompressed: uncompressed)
            }
            if kind == .deflated {
                // Deflate cannot expand by more than 1032:1; a larger claim is a zip bomb or a lie.
                let (limit, o) = compressed.multipliedReportingOverflow(by: 1032)
                guard !o, uncompressed <= limit + 1024 else {
                    throw .implausibleCompression(name: name, compressed: compressed, uncompressed: uncompressed)
                }
            }
            // The local header: its own name and extra lengths decide where the data starts.
            guard let lh = Int(exactly: localOffset), lh < start, cursor.contains(lh, count: 30),
                  c.integer(at: lh, as: UInt32.self) == localSignature else {
                throw .badLocalHeader(name: name, offset: localOffset)
            }
            let localNameLength = Int(c.integer(at: lh + 26, as: UInt16.self)!)
            let localExtraLength = Int(c.integer(at: lh + 28, as: UInt16.self)!)
            guard c.contains(lh + 30, count: localNameLength) else { throw .badLocalHeader(name: name, offset: localOffset) }
            let localName = UnsafeRawBufferPointer(rebasing: file[(lh + 30)..<(lh + 30 + localNameLength)])
            guard localName.elementsEqual(nameBytes) else {
                throw .localNameMismatch(name: name, local: String(decoding: localName, as: UTF8.self))
            }
            let dataStart = lh + 30 + localNameLength + localExtraLength
            // The data must end before the central directory starts.
            guard let csize = Int(exactly: compressed), let usize = Int(exactly: uncompressed),
                  case let (dataEnd, o2) = dataStart.addingReportingOverflow(csize), !o2, dataEnd <= start else {
                throw .dataOutOfBounds(name: name, start: UInt64(dataStart), size: compressed, limit: start)
            }
            guard byName.updateValue(entries.count, forKey: name) == nil else { throw .duplicateName(name) }
            entries.append(ZipEntry(name: name, method: kind, dataOffset: dataStart, compressedSize: csize,
                                    uncompressedSize: usize, crc32: crc, localHeaderOffset: lh))
            index += 1
            guard UInt64(index) <= count else { throw .entryCountMismatch(declared: count, found: index) }
        }
        guard UInt64(index) == count else { throw .entryCountMismatch(declared: count, found: index) }
        // Entries must not share bytes: overlapping members are how zip bombs and two-faced archives are built.
        let ordered = entries.indices.sorted { entries[$0].dataOffset < entries[$1].dataOffset }
        for (a, b) in zip(ordered, ordered.dropFirst()) where entries[a].dataRange.upperBound > entries[b].localHeaderOffset {
            throw .overlappingEntries(first: entries[a].name, second: entries[b].name)
        }
        return ZipDirectory(entries: entries, byName: byName)
    }
}

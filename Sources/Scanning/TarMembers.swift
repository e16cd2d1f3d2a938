import Foundation

/// A regular file inside a tar archive: its name and where its bytes are.
struct TarMember: Sendable, Equatable {
    var name: String
    var offset: Int
    var size: Int
}

/// Lists the regular files of a POSIX (ustar/pax) or GNU tar archive from its 512-byte headers, without reading
/// member data. Long names (GNU `L` records, pax `path=`) and base-256 sizes are understood.
enum TarMembers {
    enum Failure: Error, CustomStringConvertible {
        case malformed(String)
        var description: String { switch self { case let .malformed(m): "malformed tar archive: \(m)" } }
    }

    /// True when a 512-byte header block carries the ustar magic.
    static func looksLikeTar(_ block: [UInt8]) -> Bool {
        block.count >= 512 && Array(block[257..<262]) == Array("ustar".utf8)
    }

    static func list(read: (Int, Int) throws -> [UInt8], size fileSize: Int) throws -> [TarMember] {
        var members: [TarMember] = []
        var offset = 0
        var longName: String?
        var zeroBlocks = 0
        while offset + 512 <= fileSize {
            let h = try read(offset, 512)
            guard h.count == 512 else { throw Failure.malformed("short header at byte \(offset)") }
            if h.allSatisfy({ $0 == 0 }) {
                zeroBlocks += 1
                if zeroBlocks == 2 { break }
                offset += 512
                continue
            }
            zeroBlocks = 0
            guard looksLikeTar(h) || checksumMatches(h) else { throw Failure.malformed("bad header at byte \(offset)") }
            let size = try number(h[124..<136])
            let type = h[156]
            let (dataEnd, o1) = (offset + 512).addingReportingOverflow(size)
            guard !o1, dataEnd <= fileSize else {
                throw Failure.malformed("member at byte \(offset) claims \(size) bytes; the archive ends at \(fileSize) (truncated)")
            }
            var name = longName ?? (string(h[345..<500]).isEmpty ? string(h[0..<100]) : string(h[345..<500]) + "/" + string(h[0..<100]))
            longName = nil
            switch type {
            case UInt8(ascii: "L"): // GNU long name: the data is the next member's name
                longName = string(try read(offset + 512, min(size, 4096))[...])
            case UInt8(ascii: "x"): // pax extended header: "len key=value\n" records
                let text = String(decoding: try read(offset + 512, min(size, 65536)), as: UTF8.self)
                for line in text.split(separator: "\n") {
                    if let r = line.range(of: " path=") { longName = String(line[r.upperBound...]) }
                }
            case 0, UInt8(ascii: "0"), UInt8(ascii: "7"):
                if name.hasPrefix("./") { name.removeFirst(2) }
                members.append(TarMember(name: name, offset: offset + 512, size: size))
            default: break // folders, links, devices: nothing to read
            }
            offset = dataEnd + (512 - size % 512) % 512
        }
        return members
    }

    static func string(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// An octal field, or GNU base-256 (high bit of the first byte set).
    static func number(_ field: ArraySlice<UInt8>) throws -> Int {
        if let first = field.first, first & 0x80 != 0 {
            var v = 0
            for (k, b) in field.enumerated() {
                let byte = k == 0 ? Int(b & 0x7F) : Int(b)
                let (m, o1) = v.multipliedReportingOverflow(by: 256)
                let (s, o2) = m.addingReportingOverflow(byte)
                guard !o1, !o2 else { throw Failure.malformed("size field overflows") }
                v = s
            }
            return v
        }
        let text = String(decoding: field.prefix { $0 != 0 && $0 != 0x20 }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        if text.isEmpty { return 0 }
        guard let v = Int(text, radix: 8), v >= 0 else { throw Failure.malformed("size field \"\(text)\" is not octal") }
        return v
    }

    /// Pre-POSIX tar: the header checksum (bytes summed with the checksum field as spaces) is the only marker.
    static func checksumMatches(_ h: [UInt8]) -> Bool {
        guard let stored = try? number(h[148..<156]) else { return false }
        var sum = 0
        for (i, b) in h.enumerated() { sum += (148..<156).contains(i) ? 0x20 : Int(b) }
        return sum == stored
    }
}

import Foundation
import TensorIO
import Watermarking
#if canImport(Glibc)
import Glibc
#endif

/// One embed run as the owner's key store records it: which key marked which output, and what proves it later.
///
/// A record of a release holds the release's opening (its subkey, 0600 like the key itself), so the owner key file and
/// its store are everything needed to detect, trace and prove every release made with the key (docs/FORMAT.md,
/// "The owner's key store").
public struct KeyStoreRecord: Sendable, Codable, Equatable {
    public static let formatName = "weightmark-keystore-record"
    public static let fileVersion = 1

    public var format: String
    public var version: Int
    /// The release id (nil: the run marked with the owner key itself, `embed --no-release`).
    public var releaseId: String?
    /// The key that marked the output: the release subkey's id, or the owner key's.
    public var markKeyId: String
    public var ownerKeyId: String
    /// The release's commitment as the manifest publishes it (nil without a release).
    public var commitment: String?
    /// The release's opening (nil without a release).
    public var opening: CommitmentOpening?
    /// Where embed wrote the manifest (absolute) and its SHA-256 then.
    public var manifestPath: String
    public var manifestSHA256: String
    /// The marked output (absolute), and the original it was made from (absolute).
    public var output: String
    public var input: String
    /// Personal copies: the recipient ids of the run (nil for a plain release).
    public var recipients: [String]?
    public var markFormat: Int
    public var created: String

    public init(releaseId: String?, markKeyId: String, ownerKeyId: String, commitment: String?, opening: CommitmentOpening?,
                manifestPath: String, manifestSHA256: String, output: String, input: String, recipients: [String]?,
                markFormat: Int, created: Date = Date()) {
        format = Self.formatName
        version = Self.fileVersion
        self.releaseId = releaseId
        self.markKeyId = markKeyId
        self.ownerKeyId = ownerKeyId
        self.commitment = commitment
        self.opening = opening
        self.manifestPath = manifestPath
        self.manifestSHA256 = manifestSHA256
        self.output = output
        self.input = input
        self.recipients = recipients
        self.markFormat = markFormat
        self.created = ISO8601DateFormatter().string(from: created)
    }
}

/// The owner's key store: a folder beside the key file that `embed` adds one record to per run.
///
///     owner.key                      the owner key (0600)
///     owner.key.store/               0700
///       records/<release>-<n>.json   one KeyStoreRecord per embed run (0600), written atomically, never replaced
///       reserved/r<N>                default release ids taken (empty files; a crashed run keeps its id taken)
///
/// Each run writes a file of its own under a fresh name (`link(2)` refuses an existing one), so concurrent embeds
/// and a crash mid-write never lose an earlier record; secrets are 0600 from their first byte (mkstemp).
///
/// Default release ids are `r1`, `r2`, …: the next free index, taken atomically by creating `reserved/rN` with
/// `O_EXCL`. A detector that has the key but not the store (lost, or another machine) enumerates `r1…r16`
/// (`defaultEnumeratedReleases`); with the store, every default id it ever reserved. Each is paid for in the bound.
public struct KeyStore: Sendable {
    /// The store folder.
    public let path: String
    /// The key file it belongs to.
    public let keyPath: String

    /// How many default release ids (`r1…rN`) a detector tries when it enumerates them.
    public static let defaultEnumeratedReleases = 16

    public init(keyPath: String) {
        self.keyPath = keyPath
        path = keyPath + ".store"
    }

    var recordsFolder: String { path + "/records" }
    var reservedFolder: String { path + "/reserved" }

    /// Whether the store folder exists.
    public var exists: Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// The default release ids a detector can enumerate without the store: `r1`…`r<count>`.
    public static func enumeratedReleaseIDs(count: Int) -> [String] {
        count <= 0 ? [] : (1...count).map { "r\($0)" }
    }

    /// The index of a default release id (`r12` → 12), nil for any other id.
    public static func defaultReleaseIndex(_ id: String) -> Int? {
        guard id.hasPrefix("r"), id.count > 1, id.count <= 10 else { return nil }
        let digits = id.dropFirst()
        guard digits.allSatisfy(\.isASCIIDigit), digits.first != "0" else { return nil }
        return Int(digits)
    }

    /// Creates the store's folders (0700) if missing.
    /// - Throws: `EvidenceError.unreadable` when a folder cannot be made or is not a folder.
    public func create() throws {
        for folder in [path, recordsFolder, reservedFolder] {
            if mkdir(folder, 0o700) != 0 && errno != EEXIST {
                throw EvidenceError.unreadable(path: folder, reason: "cannot create the key store folder: \(String(cString: strerror(errno))); check the permissions of the folder holding the key")
            }
            var st = stat()
            guard lstat(folder, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
                throw EvidenceError.unreadable(path: folder, reason: "is not a folder (the key store is a folder beside the key file); move it away")
            }
        }
    }

    /// The highest default release index this store has reserved or recorded (0: none).
    public func highestDefaultIndex() -> Int {
        var used = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: reservedFolder)) ?? [] {
            if let i = Self.defaultReleaseIndex(name) { used = max(used, i) }
        }
        for record in (try? records().records) ?? [] {
            if let id = record.releaseId, let i = Self.defaultReleaseIndex(id) { used = max(used, i) }
        }
        return used
    }

    /// Takes the next free default release id (`r1`, `r2`, …) for a new release, atomically across processes.
    /// - Throws: `EvidenceError.unreadable` when the store cannot be written.
    public func reserveDefaultReleaseID() throws -> String {
        try create()
        var n = highestDefaultIndex() + 1
        while n < 1_000_000 {
            let file = reservedFolder + "/r\(n)"
            let fd = open(file, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
            if fd >= 0 {
                close(fd)
                return "r\(n)"
            }
            guard errno == EEXIST else {
                throw EvidenceError.unreadable(path: file, reason: "cannot reserve a release id in the key store: \(String(cString: strerror(errno)))")
            }
            n += 1
        }
        throw EvidenceError.unreadable(path: reservedFolder, reason: "no free default release id below r1000000; pass --release ID")
    }

    /// Adds a record under a fresh name; never replaces an earlier one.
    /// - Returns: the record's path.
    @discardableResult
    public func add(_ record: KeyStoreRecord) throws -> String {
        try create()
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let bytes = Array(try e.encode(record)) + [0x0A]
        let stem = record.releaseId ?? "owner"
        for n in 1..<100_000 {
            let file = recordsFolder + "/\(stem)-\(n).json"
            if access(file, F_OK) == 0 { continue }
            do {
                try AtomicFileWriter.write(bytes, to: file, overwrite: false, mode: 0o600)
                return file
            } catch TensorIOError.outputExists {
                continue // another run took this name between the check and the link: try the next
            }
        }
        throw EvidenceError.unreadable(path: recordsFolder, reason: "too many records named \(stem)-N.json")
    }

    /// Every record, with the reason for each file that could not be read (never dropped silently).
    public func records() throws -> (records: [KeyStoreRecord], unreadable: [(path: String, reason: String)]) {
        guard exists else { return ([], []) }
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: recordsFolder) } catch {
            if !FileManager.default.fileExists(atPath: recordsFolder) { return ([], []) }
            throw EvidenceError.unreadable(path: recordsFolder, reason: "cannot list the key store's records (permissions?)")
        }
        var out: [KeyStoreRecord] = []
        var bad: [(String, String)] = []
        for name in names.sorted() where name.hasSuffix(".json") && !name.hasPrefix(".") {
            let file = recordsFolder + "/" + name
            guard let data = FileManager.default.contents(atPath: file) else { bad.append((file, "cannot be read")); continue }
            if let d = StrictJSON.duplicateKey(in: data) { bad.append((file, "the key \"\(d.key)\" appears twice in one object (byte \(d.offset))")); continue }
            do {
                let r = try JSONDecoder().decode(KeyStoreRecord.self, from: data)
                guard r.format == KeyStoreRecord.formatName, r.version == KeyStoreRecord.fileVersion else {
                    bad.append((file, "not a key store record of version \(KeyStoreRecord.fileVersion)")); continue
                }
                if let id = r.releaseId, !ReleaseKey.isValid(releaseID: id) { bad.append((file, "release id \"\(id)\" is not valid")); continue }
                out.append(r)
            } catch {
                bad.append((file, "not a key store record (\(error))"))
            }
        }
        return (out, bad)
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { asciiValue.map { (0x30...0x39).contains($0) } ?? false }
}

import Crypto
import Foundation

/// Writes a shard's JSON lines: model records, then the trailer with their count and SHA-256.
public final class ScanLineWriter {
    private var hasher = SHA256()
    public private(set) var records = 0
    private let sink: (Data) -> Void

    public init(sink: @escaping (Data) -> Void) { self.sink = sink }

    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    public func emit(_ record: ScanRecord) throws {
        var line = try Self.encoder.encode(record)
        line.append(UInt8(ascii: "\n"))
        hasher.update(data: line)
        records += 1
        sink(line)
    }

    /// The digest of every line emitted so far (hex).
    public var digest: String { hasher.finalize().map { String(format: "%02x", $0) }.joined() }

    public func finish(_ trailer: ScanTrailer) throws {
        var line = try Self.encoder.encode(trailer)
        line.append(UInt8(ascii: "\n"))
        sink(line)
    }
}

/// One shard's output read back and checked against its trailer.
public struct ScanShardFile: Sendable {
    public var path: String
    public var records: [ScanRecord]
    public var trailer: ScanTrailer

    /// - Throws: `ScanError.invalidShardFile` when the file is unreadable, has no trailer (truncated), or its
    ///   records do not match the trailer's count or digest.
    public init(path: String) throws {
        self.path = path
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ScanError.invalidShardFile(path: path, reason: "cannot read the file")
        }
        var lines: [Data] = []
        var start = data.startIndex
        while let nl = data[start...].firstIndex(of: UInt8(ascii: "\n")) {
            lines.append(data[start...nl])
            start = nl + 1
        }
        guard start == data.endIndex else {
            throw ScanError.invalidShardFile(path: path, reason: "the last line is cut off (truncated output): run the shard again")
        }
        guard let last = lines.last, let trailer = try? JSONDecoder().decode(ScanTrailer.self, from: last), trailer.type == "trailer" else {
            throw ScanError.invalidShardFile(path: path, reason: "no trailer line at the end (the shard did not finish, or the file was cut): run the shard again")
        }
        var hasher = SHA256()
        var records: [ScanRecord] = []
        for (k, line) in lines.dropLast().enumerated() {
            hasher.update(data: line)
            guard let r = try? JSONDecoder().decode(ScanRecord.self, from: line), r.type == "model" else {
                throw ScanError.invalidShardFile(path: path, reason: "line \(k + 1) is not a scan record")
            }
            records.append(r)
        }
        let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        guard records.count == trailer.records, digest == trailer.sha256 else {
            throw ScanError.invalidShardFile(path: path, reason: "the trailer announces \(trailer.records) records with SHA-256 \(trailer.sha256.prefix(12))…, but the file holds \(records.count) with \(digest.prefix(12))… (edited or mixed output): run the shard again")
        }
        self.records = records
        self.trailer = trailer
    }
}

/// Every shard of a sweep merged, with the family-wise correction applied over the whole sweep.
public struct ScanMerge: Sendable, Codable {
    public var shards: Int
    public var threshold: ScanThreshold
    public var modelsTested: Int
    public var records: [ScanRecord]
    public var hits: Int
    public var errors: Int
    public var timeouts: Int
    public var skipped: Int
    /// Records read in part (`ScanStatus.inconclusive`); nil in files written before tool 0.4.
    public var inconclusive: Int?
    public var nonModelFiles: Int
    /// Why the set is incomplete (missing or duplicate shards, shards that disagree); empty when complete.
    public var problems: [String]

    public var isComplete: Bool { problems.isEmpty }

    public init(_ files: [ScanShardFile]) {
        var problems: [String] = []
        let counts = Set(files.map { ScanShard(parsing: $0.trailer.shard)?.count ?? -1 })
        let n = counts.count == 1 ? counts.first! : -1
        if counts.count != 1 || n < 1 { problems.append("the shard files disagree on the number of shards (\(files.map(\.trailer.shard).joined(separator: ", ")))") }
        var seen: [Int: String] = [:]
        for f in files {
            guard let s = ScanShard(parsing: f.trailer.shard) else { problems.append("\(f.path): shard \"\(f.trailer.shard)\" is not i/N"); continue }
            if let other = seen[s.index] { problems.append("shard \(s) appears twice (\(other) and \(f.path))") }
            seen[s.index] = f.path
        }
        if n >= 1 {
            let missing = (0..<n).filter { seen[$0] == nil }
            if !missing.isEmpty { problems.append("missing shard\(missing.count > 1 ? "s" : "") \(missing.map { "\($0)/\(n)" }.joined(separator: ", ")): run \(missing.count > 1 ? "them" : "it") and combine again") }
        }
        if Set(files.map { $0.trailer.keyIds }).count > 1 { problems.append("the shards were scanned with different keys") }
        let thresholds = Set(files.map { "\($0.trailer.threshold.alpha) \($0.trailer.threshold.models) \($0.trailer.threshold.testsPerKey)" })
        if thresholds.count > 1 { problems.append("the shards used different thresholds (--alpha, --family-models or --formats differ)") }
        shards = max(n, 0)
        let tested = files.reduce(0) { $0 + $1.trailer.modelsTested }
        modelsTested = tested
        // The correction is paid for the declared family, or for every model tested if that is more.
        let first = files.first?.trailer.threshold ?? ScanThreshold(alpha: 1e-6, models: 1, keys: 1, testsPerKey: 1)
        let family = ScanThreshold(alpha: first.alpha, models: max(first.models, tested), keys: first.keys, testsPerKey: first.testsPerKey)
        threshold = family
        var merged = files.flatMap(\.records)
        merged.sort { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
        for i in merged.indices {
            let tests = Double(family.models) * Double(family.keys) * Double(max(1, merged[i].testsPerKey))
            merged[i].hits = merged[i].hits.compactMap { h in
                var h = h
                h.familywiseP = FamilyWise.familywiseP(z: h.z, tests: tests)
                return h.familywiseP <= family.alpha ? h : nil
            }
        }
        records = merged
        hits = merged.reduce(0) { $0 + $1.hits.count }
        errors = merged.filter { r in r.status == .error }.count
        timeouts = merged.filter { r in r.status == .timeout }.count
        skipped = merged.filter { r in r.status == .skipped }.count
        inconclusive = merged.filter { r in r.status == .inconclusive }.count
        nonModelFiles = files.reduce(0) { $0 + $1.trailer.nonModelFiles }
        self.problems = problems
    }

    /// Exit status of a sweep, as every command's (docs/FORMAT.md): 0 when a key was found, else 3 when incomplete
    /// (missing shards, timeouts, models that could not be read: never a clean "nothing found"), else 1.
    public var exitCode: Int32 {
        if hits > 0 { return 0 }
        if !isComplete || timeouts > 0 || errors > 0 || (inconclusive ?? 0) > 0 { return 3 }
        return 1
    }

    /// A Markdown report: the threshold, the hits, then every model that was not fully tested.
    public var markdown: String {
        var s = "# WeightMark scan\n\n"
        s += "\(shards) shard\(shards == 1 ? "" : "s"), \(records.count) records, \(modelsTested) models tested, \(nonModelFiles) files holding no model.\n\n"
        s += String(format: "Family-wise threshold: α = %.0e over %d models × %d keys × up to %d tests per model and key (Bonferroni; per test P(Z ≥ z) ≤ exp(−z²/2)), i.e. Z ≥ %.2f.\n\n",
                    threshold.alpha, threshold.models, threshold.keys, threshold.testsPerKey, threshold.zThreshold)
        if !problems.isEmpty {
            s += "**INCOMPLETE**:\n\n" + problems.map { "- \($0)\n" }.joined() + "\n"
        }
        s += "## Hits (\(hits))\n\n"
        if hits == 0 { s += "None.\n\n" } else {
            s += "| model | key | format | stage | Z | family-wise p | re-check |\n|---|---|---|---|---:|---:|---|\n"
            for r in records { for h in r.hits {
                s += "| `\(r.path)` | \(h.keyId) | \(h.format) | \(h.stage) | \(String(format: "%.2f", h.z)) | \(String(format: "%.1e", h.familywiseP)) | `\(h.recheck)` |\n"
            } }
            s += "\n"
        }
        let notTested = records.filter { $0.status != .ok }
        s += "## Not fully tested (\(notTested.count))\n\n"
        if notTested.isEmpty { s += "None.\n" } else {
            s += "| model | status | reason |\n|---|---|---|\n"
            for r in notTested { s += "| `\(r.path)` | \(r.status.rawValue) | \(r.reason ?? "") |\n" }
        }
        return s
    }
}

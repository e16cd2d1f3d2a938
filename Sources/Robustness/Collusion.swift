import Attacks
import Evidence
import Foundation
import TensorIO
import Verification
import Watermarking

/// How colluders who hold several personal copies combine them.
public enum CollusionStrategy: String, Sendable, Codable, CaseIterable {
    /// The mean of the copies (model soup).
    case average
    /// Matrix k taken from copy k mod c (franken-merge, tensor-wise).
    case interleave
    /// Per weight, the value most copies hold (the median; a tie gives the midpoint).
    case majority
    /// Per weight, the value fewest copies hold where they differ (a tie gives the midpoint).
    case minority
    /// Where the copies differ, the midpoint of their two values: the part they share with the fingerprint
    /// estimated and subtracted (the copies differ by ±2β_f·chip, so the midpoint is exactly the common part).
    case erase

    public var label: String {
        switch self {
        case .average: "average"
        case .interleave: "interleave tensor-wise"
        case .majority: "majority vote"
        case .minority: "minority vote"
        case .erase: "difference-erase"
        }
    }

    /// Combines `copies` (each a list of matrices with the same names and shapes).
    public func combine(_ copies: [[(name: String, shape: [Int], values: [Float])]]) -> [(name: String, shape: [Int], values: [Float])] {
        precondition(!copies.isEmpty)
        let c = copies.count
        return copies[0].indices.map { k in
            let (name, shape) = (copies[0][k].name, copies[0][k].shape)
            if self == .interleave { return (name, shape, copies[k % c][k].values) }
            let count = copies[0][k].values.count
            var out = [Float](repeating: 0, count: count)
            var column = [Float](repeating: 0, count: c)
            for i in 0..<count {
                var lo = Float.infinity, hi = -Float.infinity, sum: Float = 0
                for j in 0..<c { let v = copies[j][k].values[i]; column[j] = v; lo = min(lo, v); hi = max(hi, v); sum += v }
                switch self {
                case .average: out[i] = sum / Float(c)
                case .erase: out[i] = lo == hi ? lo : (lo + hi) / 2
                case .majority, .minority:
                    if lo == hi { out[i] = lo; continue }
                    let high = column.reduce(0) { $0 + ($1 == hi ? 1 : 0) }, low = c - high
                    if high == low { out[i] = (lo + hi) / 2 } else if (high > low) == (self == .majority) { out[i] = hi } else { out[i] = lo }
                case .interleave: break
                }
            }
            return (name, shape, out)
        }
    }
}

/// One row of `bench --collusion`.
public struct CollusionPoint: Sendable, Codable {
    public var colluders: Int
    public var strategy: CollusionStrategy
    /// Followed by int4 (groups of 128).
    public var int4: Bool
    /// Owner mark, blind, format v2.
    public var ownerZ: Double
    public var ownerLog10Bound: Double
    /// Colluders accused (family-wise bound ≤ alpha over the registered recipients).
    public var caught: Int
    /// Registered innocents accused (must be 0).
    public var innocentsAccused: Int
    /// log10 of the family-wise bound of the best-scoring innocent (registered or extra).
    public var bestInnocentLog10FamilyBound: Double
    /// log10 family-wise bound of the best colluder.
    public var bestColluderLog10FamilyBound: Double
    /// Innocents scored: the registered non-colluders and the extra ids.
    public var innocentsScored: Int
    /// Extra innocents (not registered) whose family-wise bound, with the registered count as family, is ≤ alpha.
    public var extraInnocentsOverThreshold: Int
    /// (q, innocents whose single bound may be ≤ q): the empirical tail, to compare with q·innocentsScored.
    public var tail: [TailCount]
    public var seconds: Double

    public struct TailCount: Sendable, Codable { public var q: Double; public var count: Int }

    public var label: String { "\(colluders) × \(strategy.label)\(int4 ? " + int4" : "")" }
}

/// Builds collusions of personal copies of a model in memory and traces them through `Tracer`, the code `trace` runs.
/// Sendable: immutable after init (every stored property is a `let` of a Sendable type), so concurrent runs only read.
public final class CollusionBench: @unchecked Sendable {
    public let original: SafetensorsModel
    public let key: WatermarkKey
    public let copies: FingerprintedCopies
    public let registered: [String]
    public let extraInnocents: [String]
    public let alpha: Double

    public init(original: SafetensorsModel, key: WatermarkKey, registered: Int = 1000, extraInnocents: Int = 10_000,
                share: Double = defaultFingerprintShare, alpha: Double = 1e-6) throws {
        self.original = original
        self.key = key
        copies = try FingerprintedCopies(model: original, key: key, share: share)
        self.registered = (0..<registered).map { String(format: "recipient-%05d@example.org", $0) }
        self.extraInnocents = (0..<extraInnocents).map { String(format: "innocent-%06d", $0) }
        self.alpha = alpha
    }

    /// The colluders of case `index`: c registered recipients, a different group per case.
    public func colluders(_ c: Int, case index: Int) -> [String] {
        (0..<c).map { registered[(index * 8 + $0 * 37) % registered.count] }
    }

    /// Runs every (strategy, int4) variant on the copies of one group of c colluders (made once).
    public func run(colluders c: Int, variants: [(strategy: CollusionStrategy, int4: Bool)], group index: Int) throws -> [CollusionPoint] {
        let group = colluders(c, case: index)
        let made = group.map { copies.copy(for: $0) }
        return try variants.map { try run(group: group, copies: made, strategy: $0.strategy, int4: $0.int4) }
    }

    func run(group: [String], copies made: [[(name: String, shape: [Int], values: [Float])]], strategy: CollusionStrategy,
             int4: Bool) throws -> CollusionPoint {
        let start = Date()
        let c = group.count
        var suspect = strategy.combine(made)
        if int4 {
            let q = IntegerQuantization(bits: 4, scheme: .groupAsymmetric(size: 128))
            for k in suspect.indices { try q.apply(name: suspect[k].name, shape: suspect[k].shape, values: &suspect[k].values, context: AttackContext()) }
        }
        let source = InMemoryTensors(path: "\(c) × \(strategy.rawValue)\(int4 ? " + int4" : "")", tensors: suspect)
        return try trace(source, group: group, strategy: strategy, int4: int4, since: start)
    }

    /// The marked matrices of the colluders' combined copy (the matrices `trace` reads; the original's other
    /// tensors are not included).
    public func combined(colluders group: [String], strategy: CollusionStrategy) -> [(name: String, shape: [Int], values: [Float])] {
        strategy.combine(group.map { copies.copy(for: $0) })
    }

    /// Traces a suspect made from the copies of `group` (combined with `strategy`, then re-packaged by the caller:
    /// converted, renamed, transposed, split) against the original and every registered and extra recipient.
    public func trace(_ source: any TensorSource, group: [String], strategy: CollusionStrategy, int4: Bool = false,
                      since start: Date = Date()) throws -> CollusionPoint {
        let c = group.count
        var verification = VerificationOptions()
        verification.detect.format = .v2
        verification.detect.alpha = alpha
        let owner = try Verifier.verify(suspect: source, reference: nil, keys: .single(key), options: verification).report
        let reading = try Tracer.read(suspect: source, reference: original, secret: key.secret, options: TraceOptions())
        let scorer = TraceScorer(code: copies.code, reading: reading)
        let traced = scorer.trace(recipients: registered, alpha: alpha, top: 3)
        let colluderSet = Set(group)
        let caught = traced.accused.filter { colluderSet.contains($0.recipient) }.count
        let wrongly = traced.accused.count - caught
        // Innocents: registered non-colluders and the extra ids, screened; the best of them scored exactly.
        let innocents = registered.filter { !colluderSet.contains($0) } + extraInnocents
        let screened = scorer.screeningScores(innocents)
        let margin = scorer.screeningMargin
        let best = screened.indices.max { screened[$0] < screened[$1] }!
        let bestScore = scorer.score(innocents[best])
        let n = Double(registered.count)
        let bestInnocent = min(0, scorer.logBound(score: bestScore) / log(10) + log10(n))
        let threshold = traced.threshold
        let extraOver = screened.indices.filter { $0 >= innocents.count - extraInnocents.count && Double(screened[$0]) >= threshold - margin }
            .filter { min(0, scorer.logBound(score: scorer.score(innocents[$0])) / log(10) + log10(n)) <= log10(alpha) }.count
        // Empirical tail: scores whose single bound is q; counted generously (screening margin added).
        let tail = [1e-1, 1e-2, 1e-3].map { q -> CollusionPoint.TailCount in
            let s = scorer.screeningThreshold(recipients: 1, alpha: q)
            return .init(q: q, count: screened.filter { Double($0) >= s - margin }.count)
        }
        let colluderBest = group.map { scorer.score($0) }.max()!
        return CollusionPoint(colluders: c, strategy: strategy, int4: int4, ownerZ: owner.combinedZ, ownerLog10Bound: owner.log10PValueBound,
                              caught: caught, innocentsAccused: wrongly, bestInnocentLog10FamilyBound: bestInnocent,
                              bestColluderLog10FamilyBound: min(0, scorer.logBound(score: colluderBest) / log(10) + log10(n)),
                              innocentsScored: innocents.count, extraInnocentsOverThreshold: extraOver, tail: tail,
                              seconds: Date().timeIntervalSince(start))
    }

    /// Markdown table of collusion points.
    public static func markdown(_ points: [CollusionPoint], alpha: Double) -> String {
        var s = "| colluders × strategy | owner Z (blind) | colluders caught | best colluder p (family) | best innocent p (family) | innocents scored |\n"
        s += "|---|---:|---:|---:|---:|---:|\n"
        for p in points {
            s += "| \(p.label) | \(String(format: "%.1f", p.ownerZ)) | \(p.caught) of \(p.colluders) | \(pString(p.bestColluderLog10FamilyBound)) | \(pString(p.bestInnocentLog10FamilyBound)) | \(p.innocentsScored) |\n"
        }
        return s
    }

    static func pString(_ log10p: Double) -> String {
        if log10p > -3 { return String(format: "%.2g", pow(10, log10p)) }
        let e = floor(log10p)
        return String(format: "%.1fe%d", pow(10, log10p - e), Int(e))
    }
}

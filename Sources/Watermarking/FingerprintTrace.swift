import CKernels
import Foundation
import LinearAlgebra
import TensorIO

/// What `trace` needs besides the key and the two models.
public struct TraceOptions: Sendable {
    public var selection = TensorSelection()
    /// Family-wise bound on accusing any innocent among the listed recipients.
    public var alpha = 1e-6
    public var workers = Parallel.defaultWorkers
    /// How many of the unaccused to rank in the report.
    public var top = 10
    /// How many keys the caller searched to pick the one traced with: the family-wise bound pays for recipients × keys.
    public var keysTried = 1
    public init() {}
}

/// The soft code values read from a suspect copy (docs/FORMAT.md, "Fingerprints (trace)").
public struct FingerprintReading: Sendable {
    /// y_i, scaled to unit root mean square (the bound and the ranking do not depend on the scale).
    public var values: [Double]
    /// Weights that carried position i in the paired matrices.
    public var weights: [Int]
    /// Paired suspect matrices and their reference partners.
    public var matrices: [TracedMatrix]
    public var skipped: [SkippedTensor]

    /// Soft values given directly (tests, calibration); `Tracer.read` computes them from a copy.
    public init(values: [Double], weights: [Int], matrices: [TracedMatrix] = [], skipped: [SkippedTensor] = []) {
        self.values = values; self.weights = weights; self.matrices = matrices; self.skipped = skipped
    }
}

/// A suspect matrix read for its fingerprint.
public struct TracedMatrix: Sendable, Codable, Equatable {
    public var name: String
    public var shape: [Int]
    public var pairedWith: String
    /// Owner-mark scale fitted by least squares on D = suspect − reference and removed before reading the code.
    public var ownerScale: Double
    /// Exact zeros of the suspect where the reference is non-zero (pruned), read as no evidence.
    public var erased: Int
}

/// One recipient's line of a trace report.
public struct TraceEntry: Sendable, Codable, Equatable {
    public var recipient: String
    /// Symmetric Tardos score S_j = Σ y_i g(X_ji, p_i).
    public var score: Double
    /// log10 of the Chernoff bound on P(S ≥ score) for one innocent recipient.
    public var log10Bound: Double
    /// log10 of that bound times the number of listed recipients (family-wise; accused when ≤ log10 alpha).
    public var log10FamilyBound: Double
}

/// The result of `trace`.
public struct TraceReport: Sendable, Codable {
    public var suspect: String
    public var reference: String
    public var keyId: String
    public var scheme = "tardos-symmetric-soft/v1"
    public var positions: Int
    public var recipients: Int
    public var alpha: Double
    /// Smallest score whose family-wise bound is ≤ alpha.
    public var thresholdScore: Double
    public var accused: [TraceEntry]
    /// The highest-scoring recipients not accused.
    public var ranking: [TraceEntry]
    public var matrices: [TracedMatrix]
    public var skipped: [SkippedTensor]
    public var seconds: Double?
    /// The key the copy was traced with: release, commitment, and whether it was committed (as for `detect`).
    public var keyCommitment: KeyCommitmentStatus? = nil
    /// Keys searched to choose the traced one (nil: one); the family-wise bounds pay for them.
    public var keysTried: Int? = nil
    public var anyAccused: Bool { !accused.isEmpty }
}

/// Traitor tracing: reads the fingerprint of a suspect copy against the unmarked reference and scores recipients.
///
/// Reading: every selected suspect matrix is paired with a reference matrix exactly as informed detection pairs
/// them (by name or content, never by the key), read in the marked matrix's coordinates, and D = suspect − reference
/// (pruned values and non-finite values count as zero). The owner mark β·P is fitted by least squares and removed;
/// then y_i = Σ_{(r,c) ∈ position i} chip(r,c)·D'(r,c)/rms(W) / n_i over all paired matrices.
///
/// Scoring: S_j = Σ_i y_i g(X_ji, p_i) with g(1, p) = sqrt((1−p)/p), g(0, p) = −sqrt(p/(1−p)) (Škorić's symmetric
/// score, soft values). An innocent's bits are independent of the copy given the biases, so for every λ ≥ 0
///
///     P(S_j ≥ s | y, p) ≤ exp(−λs) Π_i (p_i e^{λ y_i g1_i} + (1 − p_i) e^{λ y_i g0_i})
///
/// exactly (Chernoff; Furon & Desoubeaux's "operational mode"); the report minimizes over λ and multiplies by the
/// number of listed recipients (Bonferroni).
public enum Tracer {
    /// Reads the soft code values of `suspect` against `reference`.
    public static func read(suspect: any TensorSource, reference: any TensorSource, secret: [UInt8], options: TraceOptions,
                            progress: @escaping @Sendable (String, Int, Int) -> Void = { _, _, _ in }) throws -> FingerprintReading {
        let tiles = try TileCarriers(secret: secret)
        let code = FingerprintCode(secret: secret)
        let selected = suspect.sourceTensors.filter { options.selection.selectsGeometry($0) }
        var skipped: [SkippedTensor] = []
        let candidates = try TileDetector.pairByContent(selected, suspect: suspect, reference: reference)
        for c in candidates where c.reference == nil {
            skipped.append(.init(name: c.tensor.name, reason: "no matrix of the reference matches it (name, shape or content): carries no readable fingerprint"))
        }
        let paired = candidates.filter { $0.reference != nil }
        guard !paired.isEmpty else {
            throw WatermarkError.nothingSelected(path: suspect.path, reason: "no suspect matrix pairs with a matrix of the reference \(reference.path); trace needs the unmarked original the copies were made from")
        }
        let m = FingerprintCode.positions
        let done = Locked(0)
        let results = try Parallel.withSingleThreadedBLAS {
            try Parallel.map(count: paired.count, workers: options.workers) { k -> (num: [Double], count: [Int], matrix: TracedMatrix) in
                let r = try readMatrix(paired[k], suspect: suspect, reference: reference, tiles: tiles, code: code)
                done.withLock { $0 += 1; progress(paired[k].tensor.name, $0, paired.count) }
                return r
            }
        }
        var num = [Double](repeating: 0, count: m), count = [Int](repeating: 0, count: m)
        for r in results {
            for i in 0..<m { num[i] += r.num[i]; count[i] += r.count[i] }
        }
        var y = (0..<m).map { count[$0] > 0 ? num[$0] / Double(count[$0]) : 0 }
        let rms = (y.reduce(0) { $0 + $1 * $1 } / Double(m)).squareRoot()
        if rms > 0, rms.isFinite { y = y.map { $0 / rms } } else { y = y.map { _ in 0 } }
        return FingerprintReading(values: y, weights: count, matrices: results.map(\.matrix), skipped: skipped)
    }

    /// Per position: Σ chip·D'/rms(W) and the number of weights, for one paired matrix.
    static func readMatrix(_ c: TileDetector.Candidate, suspect: any TensorSource, reference: any TensorSource,
                           tiles: TileCarriers, code: FingerprintCode) throws -> (num: [Double], count: [Int], matrix: TracedMatrix) {
        let ref = c.reference!
        let (mr, n) = (ref.shape[0], ref.shape[1])
        let w = try reference.decodeFloats(named: ref.name)
        reference.releaseTensor(named: ref.name)
        let s = try suspect.decodeFloats(named: c.tensor.name)
        suspect.releaseTensor(named: c.tensor.name)
        // The suspect in the marked (reference) coordinates, as informed pairing placed it (`TileDetector.pairByContent`,
        // the one pairing of informed detection): transposed; or the rows both have (a resized vocabulary); or, for a
        // row shard of a model split for model parallelism, suspect row r at reference row rowOffset + r.
        let offset = ref.transposed ? 0 : ref.rowOffset
        let rows = ref.transposed ? mr : max(0, min(mr - offset, c.tensor.shape[0]))
        let sc = c.tensor.shape[1]
        let at: (Int, Int) -> Float = ref.transposed ? { r, col in s[col * sc + r] } : { r, col in s[r * n + col] }
        var p = [Float](repeating: 0, count: rows * n)
        p.withUnsafeMutableBufferPointer { tiles.fillPattern(rows: offset..<(offset + rows), totalRows: mr, cols: n, into: $0.baseAddress!) }
        let m = FingerprintCode.positions
        var a = [Double](repeating: 0, count: m), b = [Double](repeating: 0, count: m), count = [Int](repeating: 0, count: m)
        var dp = 0.0, pp = 0.0, w2 = 0.0, finite = 0, erased = 0
        var positions: [UInt32] = [], chips: [UInt32] = []
        var d = [Float](repeating: 0, count: n)
        for r in 0..<rows {
            code.rowCodes(row: offset + r, cols: n, positions: &positions, chips: &chips)
            // D for the row with informed detection's residual rule (`Residual`: erasures masked, non-finite cleared);
            // non-finite reference weights carry nothing (the embedder left them unmarked) and are marked NaN.
            let base = (offset + r) * n
            for col in 0..<n {
                let wv = w[base + col]
                if wv.isFinite { w2 += Double(wv * wv); finite += 1; d[col] = at(r, col) } else { d[col] = 0 }
            }
            d.withUnsafeMutableBufferPointer { block in
                erased += Residual.subtract(count: n, reference: { w[base + $0].isFinite ? w[base + $0] : 0 }, from: block)
                _ = Residual.clearNonFinite(block)
            }
            for col in 0..<n where !w[base + col].isFinite { d[col] = .nan }
            var col = 0
            while col < n {
                let end = min(n, col + FingerprintCode.segment)
                let pos = Int(positions[col / FingerprintCode.segment])
                var sa: Float = 0, sb: Float = 0, sdp: Float = 0, spp: Float = 0
                var used = 0
                for k in col..<end where !d[k].isNaN {
                    let pv = p[r * n + k]
                    let chip: Float = (chips[k >> 5] >> UInt32(k & 31)) & 1 == 1 ? 1 : -1
                    sa += chip * d[k]; sb += chip * pv; sdp += d[k] * pv; spp += pv * pv
                    used += 1
                }
                a[pos] += Double(sa); b[pos] += Double(sb); dp += Double(sdp); pp += Double(spp)
                count[pos] += used
                col = end
            }
        }
        let beta = pp > 0 ? dp / pp : 0
        let sigma = finite > 0 ? (w2 / Double(finite)).squareRoot() : 0
        var num = [Double](repeating: 0, count: m)
        if sigma > 0 { for i in 0..<m { num[i] = (a[i] - beta * b[i]) / sigma } }
        return (num, count, TracedMatrix(name: c.tensor.name, shape: c.tensor.shape,
                                         pairedWith: ref.transposed ? "\(ref.name) (transposed)" : offset > 0 ? "\(ref.name) (rows \(offset)..<\(offset + rows))" : ref.name,
                                         ownerScale: beta, erased: erased))
    }
}

/// Scores recipients against a reading and bounds an innocent's score (see `Tracer`).
public struct TraceScorer: Sendable {
    public let code: FingerprintCode
    let y: [Double]
    let p: [Double]
    let g0: [Double], g1: [Double]
    /// Non-zero positions only, for the cumulant: (ln p, ln(1 − p), y·g1, y·g0).
    let terms: [(lp: Double, lq: Double, a: Double, b: Double)]
    /// Σ y_i g0_i and, per position, y_i (g1_i − g0_i) as floats for the screening kernel.
    let base: Double
    let gain: [Float]

    public init(code: FingerprintCode, reading: FingerprintReading) {
        self.code = code
        let yy = reading.values, pp = code.biases
        let gg1 = pp.map { ((1 - $0) / $0).squareRoot() }
        let gg0 = pp.map { -($0 / (1 - $0)).squareRoot() }
        var b = 0.0
        for i in 0..<yy.count { b += yy[i] * gg0[i] }
        y = yy; p = pp; g1 = gg1; g0 = gg0
        base = b
        gain = (0..<yy.count).map { Float(yy[$0] * (gg1[$0] - gg0[$0])) }
        terms = yy.indices.filter { yy[$0] != 0 }.map { (log(pp[$0]), log1p(-pp[$0]), yy[$0] * gg1[$0], yy[$0] * gg0[$0]) }
    }

    /// The exact score of one recipient (double precision).
    public func score(_ id: String) -> Double {
        let bits = code.bits(recipient: id)
        var s = 0.0
        for i in 0..<y.count { s += y[i] * (bits[i] == 1 ? g1[i] : g0[i]) }
        return s
    }

    /// Screening scores (float accumulation) of many recipients, `workers` at a time.
    public func screeningScores(_ ids: [String], workers: Int? = nil) -> [Float] {
        let workers = workers ?? Parallel.defaultWorkers
        var out = [Float](repeating: 0, count: ids.count)
        let chunks = max(1, min(ids.count, workers * 8))
        let thresholds = code.thresholds
        out.withUnsafeMutableBufferPointer { buffer in
            // Unsafe: each chunk writes its own disjoint range `lo..<hi` of `out`, which outlives the loop.
            nonisolated(unsafe) let o = buffer
            DispatchQueue.concurrentPerform(iterations: chunks) { c in
                let lo = ids.count * c / chunks, hi = ids.count * (c + 1) / chunks
                thresholds.withUnsafeBufferPointer { t in
                    gain.withUnsafeBufferPointer { g in
                        for k in lo..<hi {
                            let key = code.recipientKeyWords(ids[k])
                            o[k] = Float(base) + weightmark_trace_score(key, t.count, t.baseAddress, g.baseAddress)
                        }
                    }
                }
            }
        }
        return out
    }

    /// Largest possible |error| of a screening score: recursive summation in float of at most m/16 terms per lane,
    /// bounded by (m/16 + 16)·2⁻²³·Σ|terms| (standard error bound), plus the rounding of the gains and of the base.
    public var screeningMargin: Double {
        let total = gain.reduce(0) { $0 + Double(abs($1)) } + abs(base)
        return Double(y.count / 16 + 20) * 0x1p-23 * total * 2
    }

    /// ln of E[exp(λ y_i g(X, p_i))] summed over positions, with its first and second derivatives in λ.
    func cumulant(_ lambda: Double) -> (k: Double, slope: Double, curvature: Double) {
        var k = 0.0, slope = 0.0, curvature = 0.0
        for t in terms {
            let a = t.lp + lambda * t.a
            let b = t.lq + lambda * t.b
            let hi = max(a, b)
            let e = exp(min(a, b) - hi)
            k += hi + log1p(e)
            // Weight of X = 1 under the tilted law: 1/(1 + e^{b−a}).
            let w1 = a >= b ? 1 / (1 + e) : e / (1 + e)
            slope += w1 * t.a + (1 - w1) * t.b
            let d = t.a - t.b
            curvature += w1 * (1 - w1) * d * d
        }
        return (k, slope, curvature)
    }

    /// ln of the Chernoff bound min_λ≥0 exp(−λs) E[exp(λS)] on P(S ≥ s) for one innocent (≤ 0).
    ///
    /// Any λ gives a valid bound; λ solves K′(λ) = s (K convex) by Newton steps kept inside a bisection bracket.
    public func logBound(score s: Double) -> Double {
        guard s > 0 else { return 0 }
        var lo = 0.0, hi = 1.0
        var c = cumulant(hi)
        while c.slope < s && hi < 1e12 { lo = hi; hi *= 2; c = cumulant(hi) }
        var lambda = (lo + hi) / 2
        var best = min(0, c.k - hi * s)
        for _ in 0..<100 {
            c = cumulant(lambda)
            best = min(best, c.k - lambda * s)
            let f = c.slope - s
            if abs(f) <= 1e-13 * max(1, abs(s)) { break }
            if f < 0 { lo = lambda } else { hi = lambda }
            let newton = c.curvature > 0 ? lambda - f / c.curvature : .nan
            let next = newton > lo && newton < hi ? newton : (lo + hi) / 2
            if abs(next - lambda) <= 1e-15 * max(1, lambda) { break }
            lambda = next
        }
        return best
    }

    /// The largest score whose family-wise bound (× `recipients`) still exceeds `alpha`: scores above it may be
    /// accused, scores at or below it never are.
    public func screeningThreshold(recipients: Int, alpha: Double) -> Double {
        let target = log(alpha) - log(Double(max(1, recipients)))
        var maximum = 0.0
        for i in 0..<y.count { maximum += max(y[i] * g1[i], y[i] * g0[i]) }
        var lo = 0.0, hi = max(maximum, 0) + 1
        if logBound(score: hi) > target { return hi }
        for _ in 0..<40 {
            let mid = (lo + hi) / 2
            if logBound(score: mid) <= target { hi = mid } else { lo = mid }
        }
        return lo
    }

    /// Traces `recipients`: screens every id, recomputes the candidates exactly, accuses those whose family-wise
    /// bound is ≤ alpha and ranks the `top` next.
    /// - Parameter keysTried: keys searched before this one was chosen; the family is recipients × keys.
    public func trace(recipients ids: [String], alpha: Double, top: Int, workers: Int? = nil, keysTried: Int = 1) -> (accused: [TraceEntry], ranking: [TraceEntry], threshold: Double) {
        let family = max(1, ids.count) * max(1, keysTried)
        let n = Double(family)
        let threshold = screeningThreshold(recipients: family, alpha: alpha)
        let screened = screeningScores(ids, workers: workers)
        let margin = screeningMargin
        var candidates = Set(screened.indices.filter { Double(screened[$0]) >= threshold - margin })
        // The ranking's candidates: the best `top` screened scores beyond those (ties at the margin included).
        let order = screened.indices.sorted { screened[$0] > screened[$1] }
        for k in order.prefix(candidates.count + top + 4) { candidates.insert(k) }
        var entries = candidates.map { k -> TraceEntry in
            let s = score(ids[k])
            let lb = logBound(score: s) / log(10)
            return TraceEntry(recipient: ids[k], score: s, log10Bound: lb, log10FamilyBound: min(0, lb + log10(n)))
        }
        entries.sort { $0.score > $1.score || ($0.score == $1.score && $0.recipient < $1.recipient) }
        let accused = entries.filter { $0.log10FamilyBound <= log10(alpha) }
        let rest = entries.filter { $0.log10FamilyBound > log10(alpha) }.prefix(top)
        return (accused, Array(rest), threshold)
    }
}

extension Tracer {
    /// Reads `suspect` against `reference` and traces `recipients`.
    public static func trace(suspect: any TensorSource, reference: any TensorSource, key: WatermarkKey,
                             recipients: [String], options: TraceOptions,
                             progress: @escaping @Sendable (String, Int, Int) -> Void = { _, _, _ in }) throws -> TraceReport {
        let start = Date()
        let reading = try read(suspect: suspect, reference: reference, secret: key.secret, options: options, progress: progress)
        let scorer = TraceScorer(code: FingerprintCode(secret: key.secret), reading: reading)
        let result = scorer.trace(recipients: recipients, alpha: options.alpha, top: options.top, workers: options.workers,
                                  keysTried: options.keysTried)
        return TraceReport(suspect: suspect.path, reference: reference.path, keyId: key.id, positions: FingerprintCode.positions,
                           recipients: recipients.count, alpha: options.alpha, thresholdScore: result.threshold,
                           accused: result.accused, ranking: result.ranking, matrices: reading.matrices, skipped: reading.skipped,
                           seconds: Date().timeIntervalSince(start), keysTried: options.keysTried > 1 ? options.keysTried : nil)
    }

    /// Parses a recipients file: one id per line (surrounding spaces and a trailing CR dropped, empty lines
    /// skipped). Ids are printable Unicode; a duplicate or a control character is an error naming the line.
    public static func recipients(fromFile path: String) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TraceError.recipients(path: path, line: nil, problem: "cannot be read (missing or not a file)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw TraceError.recipients(path: path, line: nil, problem: "is not UTF-8 text")
        }
        var seen: [String: Int] = [:]
        var out: [String] = []
        for (k, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let id = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if id.isEmpty { continue }
            // Control characters (general category Cc: C0, DEL, C1).
            if id.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) {
                throw TraceError.recipients(path: path, line: k + 1, problem: "contains a control character")
            }
            if let first = seen[id] {
                throw TraceError.recipients(path: path, line: k + 1, problem: "repeats the id \"\(id)\" of line \(first)")
            }
            seen[id] = k + 1
            out.append(id)
        }
        if out.isEmpty { throw TraceError.recipients(path: path, line: nil, problem: "lists no recipient (one id per line)") }
        return out
    }
}

/// Failures specific to fingerprinting and tracing.
public enum TraceError: Error, CustomStringConvertible, Sendable {
    case recipients(path: String, line: Int?, problem: String)

    public var description: String {
        switch self {
        case let .recipients(path, line, problem):
            "\(path)\(line.map { ":\($0)" } ?? ""): recipients file \(problem). Write one recipient id per line (any printable text, e.g. an e-mail address), each id once."
        }
    }
}

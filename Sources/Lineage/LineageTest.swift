import Alignment
import Foundation
import LinearAlgebra
import TensorIO

/// How the lineage test runs.
public struct LineageOptions: Sendable {
    /// The level at which a p-value (after paying for every pair of layers tried) says "derived".
    public var alpha = 1e-6
    /// Feed-forward hidden units scored per suspect layer: a fixed, evenly spread subset chosen from the layer's width
    /// alone (never from the weights), so the null's symmetry still acts on what is scored.
    public var unitSample = 512
    /// Unit features wider than this are compared through a fixed Gaussian sketch of this many columns.
    public var sketchWidth = 256
    /// Token-embedding rows used for the residual-stream fit (evenly spaced).
    public var embeddingRows = 16_384
    /// Every (suspect layer, reference layer) pair is scored when there are at most this many pairs or the layer
    /// counts differ; otherwise the diagonal only, unless `allPairs` says so. The rule reads layer counts only.
    public var allPairsLimit = 64
    public var allPairs: Bool?
    public init() {}
}

/// One (suspect layer, reference layer) comparison.
public struct LineagePair: Codable, Sendable, Equatable {
    public var suspectLayer: Int
    public var referenceLayer: Int
    /// Suspect units scored.
    public var units: Int
    /// Exact statistic: the longest run of scored units (in the suspect's order) whose best reference units increase.
    public var increasingRun: Int
    /// log10 of its p-value, before paying for the pairs tried.
    public var log10PExact: Double
    /// Permutation-robust statistic: scored units whose input side and output side pick the same reference unit.
    public var agreeing: Int
    /// log10 of its p-value under the stronger null H0′ (docs/LINEAGE.md), before paying for the pairs tried.
    public var log10PRobust: Double
}

/// What `weightmark lineage` found.
public struct LineageReport: Codable, Sendable {
    public var suspect: String
    public var reference: String
    public var layout: String
    public var suspectLayers: Int
    public var referenceLayers: Int
    /// "procrustes on N embedding rows", or why the residual streams are compared as stored.
    public var residualFit: String
    /// Pairs scored (the Bonferroni count) and whether they were all pairs or the diagonal.
    public var pairsTried: Int
    public var allPairs: Bool
    /// Model-level log10 p-values, paid for every pair tried (and ×2 when the diagonal's Fisher combination is used).
    public var log10PExact: Double
    public var log10PRobust: Double
    public var alpha: Double
    /// "derived", "not derived", "inconclusive".
    public var verdict: String
    /// "exact" when the exact test decided, "approximate" when only the permutation-robust test did.
    public var basis: String?
    /// Per suspect layer, the reference layer it derives from when a pair is significant after paying for the pairs.
    public var localization: [LayerMatch]
    public var pairs: [LineagePair]
    public var notes: [String]
    public var seconds: Double

    public struct LayerMatch: Codable, Sendable, Equatable {
        public var suspectLayer: Int
        public var referenceLayer: Int?
        public var log10P: Double
        public var basis: String
    }
}

public enum LineageError: Error, CustomStringConvertible {
    case layoutNotRecognized(path: String)
    case residualWidth(suspect: Int, reference: Int)
    case nothingRead(suspect: String, reasons: [String])

    public var description: String {
        switch self {
        case .layoutNotRecognized(let path):
            return "\(path): no BERT or Llama layer names found; lineage compares feed-forward layers by role. Convert the model to Hugging Face names first (weightmark convert / inspect shows the names it has)."
        case .residualWidth(let s, let r):
            return "the suspect's residual stream is \(s) wide and the reference's \(r), and there is no token embedding on both sides to map one onto the other"
        case .nothingRead(let suspect, let reasons):
            return "\(suspect): no feed-forward layer could be compared: " + reasons.prefix(3).joined(separator: "; ")
        }
    }
}

/// The passive lineage test (docs/LINEAGE.md): does the suspect's feed-forward structure come from the reference's?
///
/// Null H0: the suspect was trained independently of the reference, from an initialization and by a training
/// procedure that treat the hidden units of each feed-forward layer alike, so the suspect's distribution does not
/// change when a layer's units are permuted. Nothing else is assumed about either model or its data.
///
/// Exact test. Each scored suspect unit is sent to its most similar reference unit (cosines of gate/up rows and
/// down columns after the residual stream is mapped onto the reference's by a Procrustes fit on the token
/// embeddings, which hidden-unit permutations do not touch). Under H0 the scored units arrive in a uniformly random
/// order, so the sequence of their reference units is a random rearrangement and a long increasing run is rare:
/// `P(run ≥ k) ≤ C(m, k)/k!`. A copy, fine-tuned, quantized, merged or pruned in place, keeps its units in order.
///
/// Permutation-robust test. A leaker may permute the units (function-preserving); then the exact test sees a random
/// order, as it must — no statistic can be both exact under a permutation null and blind to those permutations. The
/// robust statistic counts scored units whose input side and output side pick the same reference unit; its bound is
/// exact under H0′ (the suspect's output columns exchangeable independently of its input rows), which independent
/// training does not imply, so for H0 it is approximate and is reported as such.
public enum LineageTest {
    public static func run(suspect: any TensorSource, reference: any TensorSource, options: LineageOptions = LineageOptions(),
                           config: ModelConfig? = nil, progress: (String) -> Void = { _ in }) throws -> LineageReport {
        let start = Date()
        let faultsBefore = MappedFile.faultCount
        guard let rl = TransformerLayout.recognize(names: reference.sourceTensors.map(\.name), config: config), !rl.layers.isEmpty else {
            throw LineageError.layoutNotRecognized(path: reference.path)
        }
        guard let sl = TransformerLayout.recognize(names: suspect.sourceTensors.map(\.name), config: config), !sl.layers.isEmpty else {
            throw LineageError.layoutNotRecognized(path: suspect.path)
        }
        var notes: [String] = []
        let swiglu = rl.activation == .swiglu && sl.activation == .swiglu
        progress("residual stream")
        let (fit, residualFit) = try residualMap(suspect: suspect, sl, reference: reference, rl, options, &notes)
        let dr = fit.cols
        let sketch = sketchMatrix(width: dr, columns: options.sketchWidth)

        let ls = sl.layers.count, lr = rl.layers.count
        let all = options.allPairs ?? (ls != lr || ls * lr <= options.allPairsLimit)
        var planned: [(Int, Int)] = []
        for a in sl.layers.map(\.index) {
            if all { for b in rl.layers.map(\.index) { planned.append((a, b)) } } else { planned.append((a, a)) }
        }
        // Features of one layer at a time on the diagonal; with every pair, the reference's are kept for all layers.
        var referenceFeatures: [Int: UnitFeatures] = [:]
        func referenceLayer(_ index: Int) -> UnitFeatures? {
            if let f = referenceFeatures[index] { return f }
            guard let layer = rl.layers.first(where: { $0.index == index }) else { return nil }
            progress("reference layer \(index)")
            do {
                let f = try features(of: reference, layer, residual: nil, sketch: sketch, sample: nil, swiglu: swiglu)
                if all { referenceFeatures[index] = f }
                return f
            } catch {
                notes.append("reference layer \(index) not read: \(error)")
                return nil
            }
        }
        var unread: [String] = []
        var pairs: [LineagePair] = []
        for layer in sl.layers {
            progress("suspect layer \(layer.index)")
            let s: UnitFeatures
            do {
                let n = try upShape(of: suspect, layer).units
                s = try features(of: suspect, layer, residual: fit, sketch: sketch, sample: evenlySpread(count: n, take: options.unitSample), swiglu: swiglu)
            } catch {
                unread.append("layer \(layer.index): \(error)")
                continue
            }
            for (a, b) in planned where a == layer.index {
                guard let r = referenceLayer(b) else { continue }
                pairs.append(score(s, r, suspectLayer: a, referenceLayer: b))
            }
        }
        notes += unread.map { "suspect " + $0 + " (not read)" }
        guard !pairs.isEmpty else {
            throw LineageError.nothingRead(suspect: suspect.path, reasons: unread + notes)
        }
        let tried = Double(planned.count)
        func modelLevel(_ p: (LineagePair) -> Double) -> Double {
            let best = pairs.map(p).min() ?? 0
            var ln = min(0, best * M_LN10 + log(tried))
            if ls == lr {
                let diagonal = pairs.filter { $0.suspectLayer == $0.referenceLayer }.map { p($0) * M_LN10 }
                if diagonal.count == lr {
                    ln = min(0, min(ln, LineageBounds.logFisher(diagonal)) + log(2))
                }
            }
            return LineageBounds.log10(ln)
        }
        let exact = modelLevel(\.log10PExact), robust = modelLevel(\.log10PRobust)
        let logAlpha = Foundation.log10(options.alpha)
        var localization: [LineageReport.LayerMatch] = []
        for a in sl.layers.map(\.index) {
            let rows = pairs.filter { $0.suspectLayer == a }
            guard let bestExact = rows.min(by: { $0.log10PExact < $1.log10PExact }),
                  let bestRobust = rows.min(by: { $0.log10PRobust < $1.log10PRobust }) else { continue }
            let pe = bestExact.log10PExact + Foundation.log10(tried), pr = bestRobust.log10PRobust + Foundation.log10(tried)
            if pe <= logAlpha {
                localization.append(.init(suspectLayer: a, referenceLayer: bestExact.referenceLayer, log10P: pe, basis: "exact"))
            } else if pr <= logAlpha {
                localization.append(.init(suspectLayer: a, referenceLayer: bestRobust.referenceLayer, log10P: pr, basis: "approximate"))
            } else {
                localization.append(.init(suspectLayer: a, referenceLayer: nil, log10P: min(0, min(pe, pr)), basis: "none"))
            }
        }
        try MappedFile.checkNoFaults(since: faultsBefore, in: suspect.path)
        try MappedFile.checkNoFaults(since: faultsBefore, in: reference.path)
        var verdict = "not derived", basis: String?
        if exact <= logAlpha { verdict = "derived"; basis = "exact" } else if robust <= logAlpha { verdict = "derived"; basis = "approximate" }
        if verdict == "not derived", Double(unread.count) > 0.1 * Double(ls) {
            verdict = "inconclusive"
            notes.append("\(unread.count) of \(ls) suspect layers could not be read: a negative answer would rest on what was not read")
        }
        return LineageReport(suspect: suspect.path, reference: reference.path, layout: rl.family.rawValue,
                             suspectLayers: ls, referenceLayers: lr, residualFit: residualFit, pairsTried: planned.count,
                             allPairs: all, log10PExact: exact, log10PRobust: robust, alpha: options.alpha, verdict: verdict,
                             basis: basis, localization: localization, pairs: pairs, notes: notes,
                             seconds: Date().timeIntervalSince(start))
    }

    /// Unit features of one layer, each row unit-normalized: the input side (gate and up rows; one block each) and the
    /// output side (down columns), all in the reference's residual coordinates and sketched.
    struct UnitFeatures {
        var units: Int
        /// Input-side blocks (units × width), and whether a block's sign is free (SwiGLU up rows).
        var input: [(Matrix, signFree: Bool)]
        var output: (Matrix, signFree: Bool)
    }

    /// The layer's up projection as (hidden units, residual width).
    static func upShape(of source: any TensorSource, _ layer: TransformerLayout.Layer) throws -> (units: Int, residual: Int) {
        guard let shape = source.sourceTensor(named: layer.up)?.shape, shape.count == 2 else {
            throw TensorIOError.tensorNotFound(name: layer.up, path: source.path)
        }
        return (shape[0], shape[1])
    }

    static func features(of source: any TensorSource, _ layer: TransformerLayout.Layer, residual: Matrix?, sketch: Matrix?,
                         sample: [Int]?, swiglu: Bool) throws -> UnitFeatures {
        func read(_ name: String) throws -> Matrix {
            guard let shape = source.sourceTensor(named: name)?.shape, shape.count == 2 else {
                throw TensorIOError.tensorNotFound(name: name, path: source.path)
            }
            var values = try source.decodeFloats(named: name)
            source.releaseTensor(named: name)
            for i in values.indices where !values[i].isFinite { values[i] = 0 }
            return Matrix(rows: shape[0], cols: shape[1], storage: values)
        }
        let up = try read(layer.up)
        let down = try read(layer.down).transposed
        guard down.rows == up.rows, down.cols == up.cols else {
            throw LineageShapeError(message: "\(layer.down) is not \(up.cols)×\(up.rows), the transpose of \(layer.up)")
        }
        func project(_ m: Matrix) -> Matrix {
            var rows = m
            if let sample { rows = Matrix(rows: sample.count, cols: m.cols) { i, j in m.storage[sample[i] * m.cols + j] } }
            if let residual { rows = BLAS.matmul(rows, residual) }
            if let sketch { rows = BLAS.matmul(rows, sketch) }
            return normalizedRows(rows)
        }
        var input: [(Matrix, signFree: Bool)] = []
        if swiglu, let gate = layer.gate {
            let g = try read(gate)
            guard g.rows == up.rows, g.cols == up.cols else { throw LineageShapeError(message: "\(gate) is not shaped like \(layer.up)") }
            input.append((project(g), false))
            input.append((project(up), true))
        } else {
            input.append((project(up), false))
        }
        return UnitFeatures(units: sample?.count ?? up.rows, input: input, output: (project(down), swiglu))
    }

    struct LineageShapeError: Error, CustomStringConvertible { var message: String; var description: String { message } }

    /// Scores one pair: each scored suspect unit's best reference unit by the summed similarity of all its sides
    /// (exact test), and by its input side and its output side separately (robust test).
    static func score(_ s: UnitFeatures, _ r: UnitFeatures, suspectLayer: Int, referenceLayer: Int) -> LineagePair {
        let m = s.units, n = r.units
        func similarity(_ a: (Matrix, signFree: Bool), _ b: (Matrix, signFree: Bool)) -> [Float] {
            guard a.0.cols == b.0.cols else { return [Float](repeating: 0, count: m * n) }
            var c = BLAS.matmul(a.0, b.0, transB: .transposed).storage
            if a.signFree { for i in c.indices { c[i] = abs(c[i]) } }
            return c
        }
        var inputSum = [Float](repeating: 0, count: m * n)
        for (a, b) in zip(s.input, r.input) {
            let c = similarity(a, b)
            for i in inputSum.indices { inputSum[i] += c[i] }
        }
        let outputSim = similarity(s.output, r.output)
        func argmaxRows(_ c: [Float]) -> [Int] {
            (0..<m).map { i in
                var best = 0, value = -Float.infinity
                for j in 0..<n where c[i * n + j] > value { value = c[i * n + j]; best = j }
                return best
            }
        }
        var total = inputSum
        for i in total.indices { total[i] += outputSim[i] }
        let whole = argmaxRows(total)
        let run = LineageBounds.longestIncreasing(whole)
        let inputSide = argmaxRows(inputSum), outputSide = argmaxRows(outputSim)
        var counts: [Int: Int] = [:]
        for v in outputSide { counts[v, default: 0] += 1 }
        let agreeing = zip(inputSide, outputSide).filter { $0 == $1 }.count
        let mu = Double(inputSide.reduce(0) { $0 + (counts[$1] ?? 0) }) / Double(max(1, m))
        return LineagePair(suspectLayer: suspectLayer, referenceLayer: referenceLayer, units: m, increasingRun: run,
                           log10PExact: LineageBounds.log10(LineageBounds.logPIncreasing(lis: run, count: m)),
                           agreeing: agreeing,
                           log10PRobust: LineageBounds.log10(LineageBounds.logPAgreement(agree: agreeing, count: m, meanMultiplicity: mu)))
    }

    /// The map from the suspect's residual coordinates onto the reference's (d_s × d_r): orthogonal Procrustes on
    /// shared token-embedding rows, Q = U Vᵀ with E_sᵀ E_r = U Σ Vᵀ. It reads the embeddings only, which permuting
    /// hidden units never changes. Identity when there is no embedding on both sides and the widths agree.
    static func residualMap(suspect: any TensorSource, _ sl: TransformerLayout, reference: any TensorSource, _ rl: TransformerLayout,
                            _ options: LineageOptions, _ notes: inout [String]) throws -> (Matrix, String) {
        let ds = try upShape(of: suspect, sl.layers[0]).residual
        let dr = try upShape(of: reference, rl.layers[0]).residual
        if let es = sl.embedding, let er = rl.embedding,
           let ss = suspect.sourceTensor(named: es)?.shape, let rs = reference.sourceTensor(named: er)?.shape,
           ss.count == 2, rs.count == 2, ss[1] == ds, rs[1] == dr {
            let shared = min(ss[0], rs[0])
            if shared >= max(ds, dr) {
                let rows = evenlySpread(count: shared, take: options.embeddingRows)
                func take(_ source: any TensorSource, _ name: String, _ d: Int) throws -> Matrix {
                    var v = try source.decodeFloats(named: name)
                    source.releaseTensor(named: name)
                    for i in v.indices where !v[i].isFinite { v[i] = 0 }
                    return Matrix(rows: rows.count, cols: d) { i, j in v[rows[i] * d + j] }
                }
                let a = try take(suspect, es, ds), b = try take(reference, er, dr)
                let (u, _, vt) = try LAPACK.svd(BLAS.matmul(a, b, transA: .transposed))
                return (BLAS.matmul(u, vt), "procrustes on \(rows.count) shared token-embedding rows")
            }
            notes.append("the embeddings share \(shared) rows, fewer than the residual width: residual stream compared as stored")
        } else {
            notes.append("no token embedding on both sides: residual stream compared as stored (a rotated copy is not recognized)")
        }
        guard ds == dr else { throw LineageError.residualWidth(suspect: ds, reference: dr) }
        return (Matrix.identity(ds), "none (compared as stored)")
    }

    /// A fixed Gaussian sketch (width × columns, scaled by 1/√columns), nil when the width is small enough already.
    /// Seeded by its size only.
    static func sketchMatrix(width: Int, columns: Int) -> Matrix? {
        guard width > columns else { return nil }
        var rng = SplitMix64(seed: 0x4C49_4E45_4147_4531 ^ UInt64(width))
        let scale = 1 / Float(columns).squareRoot()
        return Matrix(rows: width, cols: columns) { _, _ in rng.nextGaussian() * scale }
    }

    /// `take` indices spread evenly over 0..<count (all of them when count ≤ take), increasing.
    static func evenlySpread(count: Int, take: Int) -> [Int] {
        guard count > take, take > 0 else { return Array(0..<count) }
        return (0..<take).map { $0 * count / take }
    }

    static func normalizedRows(_ m: Matrix) -> Matrix {
        var out = m
        for i in 0..<m.rows {
            var s: Float = 0
            for j in 0..<m.cols { s += m.storage[i * m.cols + j] * m.storage[i * m.cols + j] }
            let inv: Float = s > 0 ? 1 / s.squareRoot() : 0
            for j in 0..<m.cols { out.storage[i * m.cols + j] *= inv }
        }
        return out
    }
}

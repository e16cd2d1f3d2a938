import Dispatch
import Foundation
import LinearAlgebra
import TensorIO

/// How alignment searches.
public struct AlignOptions: Sendable {
    /// Heads and activation, usually from the reference's config.json; without a head count, heads are not aligned.
    public var config: ModelConfig?
    /// A group counts as already aligned when every unit's mean cosine with the same-index reference unit reaches
    /// this (a permuted unit sits near 0; int2 or 2σ noise keep matched units above 0.4).
    public var identityCosine: Float = 0.4
    /// Per-unit scales within this of 1 are left alone (estimation noise, not a rescaling).
    public var scaleTolerance: Float = 0.01
    /// Unit features (rows of up and gate, columns of down) no wider than this are compared whole.
    public var exactFeatureLimit = 512
    /// Wider ones are compared through a fixed sparse random sketch of this many columns first, and of 4× as many
    /// when the narrow sketch's matches leave doubt; matches are verified on full rows either way.
    public var sketchColumns = 64
    public init() {}
}

/// Key-free alignment of a suspect to the reference it may derive from: undoes the function-preserving edits a
/// leaker can make for free — residual-stream rotation (with norm weights fused), attention-head permutation (within
/// key/value groups under grouped-query attention), FFN hidden-unit permutation with per-unit scale and sign where
/// the activation allows it, and dropped or duplicated units.
///
/// Alignment reads the suspect and the reference only, never the key, so the suspect it hands to informed detection
/// is as independent of the key as the suspect itself: detection's bound `P(Z ≥ z) ≤ exp(−z²/2)` holds unchanged
/// (docs/FORMAT.md, docs/ALIGNMENT.md).
public enum ModelAligner {
    /// Aligns `suspect` to `reference`.
    /// - Returns: the aligned suspect (rewritten tensors in memory, the rest read from the suspect) and the report.
    public static func align(suspect: any TensorSource, reference: any TensorSource, options: AlignOptions = AlignOptions(),
                             progress: (String) -> Void = { _ in }) throws -> (source: AlignedTensors, report: AlignmentReport) {
        let start = Date()
        let names = reference.sourceTensors.map(\.name)
        guard let layout = TransformerLayout.recognize(names: names, config: options.config) else {
            return (AlignedTensors(base: suspect, overrides: [:]),
                    AlignmentReport(layout: nil, changed: false, notes: ["alignment: no BERT or Llama tensor names in the reference; nothing aligned"],
                                    rotation: nil, layers: [], seconds: Date().timeIntervalSince(start)))
        }
        // One BLAS thread, and our own two-way parallelism over row blocks and tensors: OpenBLAS's threads wait for
        // each other by spinning, which on a shared machine made the similarity products 1.5× slower than one thread.
        let previousThreads = BLASInfo.current.threadCount
        _ = BLASInfo.setThreadCount(1)
        defer { if let previousThreads { _ = BLASInfo.setThreadCount(previousThreads) } }
        let ws = Workspace(suspect: suspect, reference: reference)
        var notes: [String] = []
        var rotation: RotationFinding?
        if layout.allowsResidualRotation {
            progress("residual stream")
            rotation = try alignRotation(ws, layout, options, &notes)
        }
        var findings: [LayerFinding] = []
        for layer in layout.layers {
            progress("layer \(layer.index)")
            var heads: GroupFinding?
            if let h = layout.heads, let kv = layout.kvHeads {
                heads = try alignHeads(ws, layer, heads: h, kvHeads: kv, options, &notes)
            } else if layer.index == 0 {
                notes.append("attention heads not aligned: head count unknown (no num_attention_heads in a config.json next to the reference)")
            }
            guard let ffn = try alignFFN(ws, layer, layout.activation, options, &notes) else { continue }
            findings.append(LayerFinding(layer: layer.index, heads: heads, ffn: ffn))
        }
        var overrides: [String: (shape: [Int], values: [Float])] = [:]
        for (name, m) in ws.overrides {
            overrides[name] = (reference.sourceTensor(named: name)?.shape.count == 1 ? [m.count] : [m.rows, m.cols], m.storage)
        }
        let report = AlignmentReport(layout: layout.family.rawValue, changed: !overrides.isEmpty || !ws.gathers.isEmpty, notes: notes,
                                     rotation: rotation, layers: findings, seconds: Date().timeIntervalSince(start))
        return (AlignedTensors(base: suspect, overrides: overrides, gathers: ws.gathers), report)
    }

    /// Suspect tensors as aligned so far, and the reference.
    final class Workspace {
        let suspect: any TensorSource
        let reference: any TensorSource
        /// Rewritten suspect tensors held as floats (after a rotation, or 1-D biases).
        var overrides: [String: Matrix] = [:]
        /// Rewritten suspect tensors described by where their rows or columns come from in the suspect.
        var gathers: [String: TensorGather] = [:]
        let suspectRows: any RowBlockDecodable
        let referenceRows: any RowBlockDecodable
        init(suspect: any TensorSource, reference: any TensorSource) {
            self.suspect = suspect; self.reference = reference
            suspectRows = DecodedRows.rowBlocks(of: suspect)
            referenceRows = DecodedRows.rowBlocks(of: reference)
        }

        func shape(suspect name: String) -> [Int]? {
            if let o = overrides[name] { return [o.rows, o.cols] }
            if let g = gathers[name] { return g.shape }
            return suspect.sourceTensor(named: name).flatMap { $0.isFloating ? $0.shape : nil }
        }
        func shape(reference name: String) -> [Int]? { reference.sourceTensor(named: name).flatMap { $0.isFloating ? $0.shape : nil } }

        /// The suspect's matrix `name` as aligned so far.
        func suspectMatrix(_ name: String) throws -> Matrix {
            if let o = overrides[name] { return o }
            if let g = gathers[name] { return g.applied(to: try Self.matrix(suspect, name)) }
            return try Self.matrix(suspect, name)
        }

        /// Records the rewrite of `name`: as a gather over the suspect when the suspect's tensor is untouched so far,
        /// else as the floats `applied()` (the gather applied to the tensor as aligned so far).
        func set(_ name: String, _ m: Matrix) { gathers[name] = nil; overrides[name] = m }

        func store(_ name: String, _ gather: TensorGather, applied: () -> Matrix) {
            if overrides[name] == nil && gathers[name] == nil {
                gathers[name] = gather
            } else {
                let m = applied()
                gathers[name] = nil
                overrides[name] = m
            }
        }
        /// The reference's matrix `name`.
        func referenceMatrix(_ name: String) throws -> Matrix { try Self.matrix(reference, name) }

        /// Several matrices decoded two at a time (nil names give nil): (name, from the reference?) each.
        func matrices(_ wanted: [(String?, Bool)]) throws -> [Matrix?] {
            let results = Locked([Result<Matrix?, Error>](repeating: .success(nil), count: wanted.count))
            // Unsafe: the workspace's dictionaries are only read until this returns, and the sources' decoding is
            // thread-safe (the detector reads tensors of one source concurrently); results go through `Locked`s.
            nonisolated(unsafe) let this = self
            let next = Locked(0)
            DispatchQueue.concurrentPerform(iterations: min(2, wanted.count)) { _ in
                while true {
                    let k = next.withLock { n -> Int in defer { n += 1 }; return n }
                    guard k < wanted.count else { return }
                    guard let name = wanted[k].0 else { continue }
                    let r = Result { try wanted[k].1 ? this.referenceMatrix(name) : this.suspectMatrix(name) }.map { Optional($0) }
                    results.withLock { $0[k] = r }
                }
            }
            return try results.withLock { try $0.map { try $0.get() } }
        }
        static func matrix(_ source: any TensorSource, _ name: String) throws -> Matrix {
            guard let t = source.sourceTensor(named: name) else { throw TensorIOError.tensorNotFound(name: name, path: source.path) }
            let values = try source.decodeFloats(named: name)
            source.releaseTensor(named: name)
            return t.shape.count == 2 ? Matrix(rows: t.shape[0], cols: t.shape[1], storage: values)
                                      : Matrix(rows: 1, cols: values.count, storage: values)
        }
    }

    // MARK: - Residual stream

    static func alignRotation(_ ws: Workspace, _ layout: TransformerLayout, _ options: AlignOptions,
                              _ notes: inout [String]) throws -> RotationFinding? {
        guard let e = layout.embedding, let se = ws.shape(suspect: e), se == ws.shape(reference: e) else {
            notes.append("residual rotation not checked: the embedding is missing or shaped differently in the suspect")
            return nil
        }
        let d = se[1]
        // Cheap check on ≤ 512 evenly spaced rows, read alone.
        let stride = max(1, se[0] / 512)
        var cosSum = 0.0, count = 0
        var a = [Float](repeating: 0, count: d), b = a
        for i in Swift.stride(from: 0, to: se[0], by: stride) {
            try a.withUnsafeMutableBufferPointer { try ws.readSuspect(e, rows: i..<(i + 1), into: $0) }
            try b.withUnsafeMutableBufferPointer { try ws.readReference(e, rows: i..<(i + 1), into: $0) }
            cosSum += Double(cosine(a, 0, b, 0, d)); count += 1
        }
        let meanCos = cosSum / Double(max(1, count))
        if meanCos >= Double(options.identityCosine) {
            let fit = PairStatistics.relativeResidual([try ws.statistics(e, along: .rows, groupSize: 1)])
            // Norm weights may be fused without a rotation (also function-preserving).
            let rescaled = try unfuseNorms(ws, layout, d, options)
            return RotationFinding(found: false, embeddingCosine: meanCos, distanceFromIdentity: 0, fitResidual: fit, columnsRescaled: rescaled)
        }
        let es = try ws.suspectMatrix(e), er = try ws.referenceMatrix(e)
        // Orthogonal Procrustes: Q = argmin ‖E_r Q − E_s‖ over orthogonal Q = U Vᵀ, with E_rᵀ E_s = U Σ Vᵀ.
        let m = BLAS.matmul(er, es, transA: .transposed)
        let (u, _, vt) = try LAPACK.svd(m)
        let q = BLAS.matmul(u, vt)
        ws.set(e, BLAS.matmul(es, q, transB: .transposed))
        func rotate(reading name: String?) throws {
            guard let name, let sh = ws.shape(suspect: name), sh.count == 2, sh[1] == d else { return }
            ws.set(name, BLAS.matmul(try ws.suspectMatrix(name), q, transB: .transposed))
        }
        func rotate(writing name: String?) throws {
            guard let name, let sh = ws.shape(suspect: name), sh.count == 2, sh[0] == d else { return }
            ws.set(name, BLAS.matmul(q, try ws.suspectMatrix(name)))
        }
        for l in layout.layers {
            for n in [l.query, l.key, l.value, l.gate, l.up] { try rotate(reading: n) }
            for n in [l.attentionOutput, l.down] { try rotate(writing: n) }
        }
        try rotate(reading: layout.outputHead)
        let rescaled = try unfuseNorms(ws, layout, d, options)
        var dist = 0.0
        for i in 0..<d { for j in 0..<d { let x = Double(q.storage[i * d + j]) - (i == j ? 1 : 0); dist += x * x } }
        return RotationFinding(found: true, embeddingCosine: meanCos, distanceFromIdentity: (dist / Double(d)).squareRoot(),
                               fitResidual: relativeResidual([(ws.overrides[e]!, er)]), columnsRescaled: rescaled)
    }

    /// Divides fused norm weights back out of the matrices that read the normalized stream (W diag(g) → W).
    ///
    /// Per input column j, |g_j| = ‖suspect column‖ / ‖reference column‖ over the matrices never rescaled per row
    /// (q/k/v; gate, else up; the output head), which row permutations do not change; its sign is that of the ratio of
    /// column sums (also permutation-invariant) where the reference's sum is well away from zero. Applied when the
    /// suspect's norm weights are all 1 and the reference's are not; without norm weights in the suspect, when the
    /// ratios spread by more than 1.25× across columns (quantization noise inflates column norms only a few percent).
    /// - Returns: the number of columns rescaled.
    static func unfuseNorms(_ ws: Workspace, _ layout: TransformerLayout, _ d: Int, _ options: AlignOptions) throws -> Int {
        var rescaled = 0
        func unfuse(_ probe: [String?], _ apply: [String?], norm: String?) throws {
            // With the norm weights at hand the question is settled directly: fused means the suspect's are all 1 and
            // the reference's are not.
            var knownFused: Bool?
            if let norm, let gs = try? ws.suspectMatrix(norm).storage, let gr = try? ws.referenceMatrix(norm).storage, gs.count == d, gr.count == d {
                knownFused = gs.allSatisfy { abs($0 - 1) < 1e-3 } && gr.contains { abs($0 - 1) > options.scaleTolerance }
            }
            if knownFused == false { return }
            let probes = probe.compactMap { $0 }.filter { ws.shape(suspect: $0)?.last == d && ws.shape(reference: $0)?.last == d }
            guard !probes.isEmpty else { return }
            var ns = [Double](repeating: 0, count: d), nr = [Double](repeating: 0, count: d)
            var ss = [Double](repeating: 0, count: d), sr = [Double](repeating: 0, count: d)
            for p in probes {
                let s = try ws.suspectMatrix(p), r = try ws.referenceMatrix(p)
                for i in 0..<s.rows { for j in 0..<d {
                    let x = Double(s.storage[i * d + j]); ns[j] += x * x; ss[j] += x
                } }
                for i in 0..<r.rows { for j in 0..<d {
                    let x = Double(r.storage[i * d + j]); nr[j] += x * x; sr[j] += x
                } }
            }
            let rowsS = Double(probes.reduce(0) { $0 + (ws.shape(suspect: $1)?[0] ?? 0) })
            let rowsR = Double(probes.reduce(0) { $0 + (ws.shape(reference: $1)?[0] ?? 0) })
            guard rowsS > 0, rowsR > 0 else { return }
            let scale: [Float] = (0..<d).map { j in
                guard nr[j] > 0, ns[j] > 0 else { return 1 }
                let magnitude = ((ns[j] / rowsS) / (nr[j] / rowsR)).squareRoot()
                // The sum of an unstructured column is ~√rows·rms = ‖column‖: trust its sign only well above that
                // (norm weights of trained models are positive, so an undetermined sign stays +).
                let determined = abs(sr[j]) > 3 * nr[j].squareRoot() && abs(ss[j]) > 3 * ns[j].squareRoot()
                let negative = determined && (ss[j] > 0) != (sr[j] > 0)
                return Float(negative ? -magnitude : magnitude)
            }
            let magnitudes = scale.map { abs($0) }
            let spread = (magnitudes.max() ?? 1) / max(1e-12, magnitudes.min() ?? 1)
            // Without them: quantization noise inflates column norms by a few percent, unevenly; fused norm weights of a
            // trained model spread far more (a max/min ratio above 1.25), or flip signs.
            guard knownFused == true || scale.contains(where: { $0 < 0 }) || spread > 1.25 else { return }
            rescaled += scale.filter { abs($0 - 1) > options.scaleTolerance }.count
            for name in apply.compactMap({ $0 }) {
                guard var w = try? ws.suspectMatrix(name), w.cols == d else { continue }
                for i in 0..<w.rows { for j in 0..<d { w.storage[i * d + j] /= scale[j] } }
                ws.set(name, w)
            }
        }
        for l in layout.layers {
            try unfuse([l.query, l.key, l.value], [l.query, l.key, l.value], norm: l.attentionNorm)
            try unfuse([l.gate ?? l.up], [l.gate, l.up], norm: l.ffnNorm)
        }
        try unfuse([layout.outputHead], [layout.outputHead], norm: layout.finalNorm)
        return rescaled
    }

    // MARK: - Attention heads

    static func alignHeads(_ ws: Workspace, _ l: TransformerLayout.Layer, heads h: Int, kvHeads hk: Int,
                           _ options: AlignOptions, _ notes: inout [String]) throws -> GroupFinding? {
        let names = [l.query, l.key, l.value, l.attentionOutput]
        guard names.allSatisfy({ ws.shape(suspect: $0) != nil && ws.shape(suspect: $0) == ws.shape(reference: $0) }),
              let sq = ws.shape(suspect: l.query), let sk = ws.shape(suspect: l.key), let so = ws.shape(suspect: l.attentionOutput),
              sq.count == 2, sk.count == 2, so.count == 2 else {
            notes.append("layer \(l.index): attention heads not aligned (q/k/v/o shaped differently from the reference)")
            return nil
        }
        guard h > 0, hk > 0, h % hk == 0, sq[0] % h == 0, sk[0] == sq[0] / h * hk, so[1] == sq[0] else {
            notes.append("layer \(l.index): attention heads not aligned (\(h) heads, \(hk) key/value heads do not fit q \(sq[0]) rows, k \(sk[0]) rows)")
            return nil
        }
        let hd = sq[0] / h, group = h / hk
        // Already aligned: every head's blocks agree with the same-index reference head. Head 0's q block, read alone,
        // rules that out when it is already below the threshold (a permuted layer); otherwise one streamed pass gathers
        // the per-head inner products of q/k/v row blocks and o column blocks.
        var qa0 = [Float](repeating: 0, count: hd * sq[1]), qb0 = qa0
        try qa0.withUnsafeMutableBufferPointer { try ws.readSuspect(l.query, rows: 0..<hd, into: $0) }
        try qb0.withUnsafeMutableBufferPointer { try ws.readReference(l.query, rows: 0..<hd, into: $0) }
        var streamedBefore: Double?
        var identity = false
        if cosine(qa0, 0, qb0, 0, qa0.count) >= options.identityCosine {
            let qStats = try ws.statistics(l.query, along: .rows, groupSize: hd), kStats = try ws.statistics(l.key, along: .rows, groupSize: hd)
            let vStats = try ws.statistics(l.value, along: .rows, groupSize: hd)
            let oStats = try ws.statistics(l.attentionOutput, along: .columns, groupSize: hd)
            streamedBefore = PairStatistics.relativeResidual([qStats, kStats, vStats, oStats])
            identity = (0..<h).allSatisfy { qStats.cosine($0) >= options.identityCosine && oStats.cosine($0) >= options.identityCosine }
                && (0..<hk).allSatisfy { kStats.cosine($0) >= options.identityCosine && vStats.cosine($0) >= options.identityCosine }
        }
        if identity, let before = streamedBefore {
            return GroupFinding(kind: "heads", unit: "head", suspectUnits: h, referenceUnits: h, moved: 0, rescaled: 0, signFlips: 0, dropped: 0,
                                duplicated: 0, extra: 0, ambiguous: [], ambiguousCount: 0, residualBefore: before, residualAfter: before, identityByCheck: true)
        }
        let decoded = try ws.matrices(names.map { ($0, false) } + names.map { ($0, true) }).map { $0! }
        let (qs, ks, vs, os) = (decoded[0], decoded[1], decoded[2], decoded[3])
        let (qr, kr, vr, or) = (decoded[4], decoded[5], decoded[6], decoded[7])
        let before = streamedBefore ?? relativeResidual([(qs, qr), (ks, kr), (vs, vr), (os, or)])
        // Cosines of every suspect head block with every reference head block, one matrix product per projection
        // (o's head blocks are column blocks: gathered head-major first, which keeps each block's elements paired).
        let cq = blockCosines(qs, qr, blocks: h), ck = blockCosines(ks, kr, blocks: hk), cv = blockCosines(vs, vr, blocks: hk)
        let co = blockCosines(headMajor(os, heads: h), headMajor(or, heads: h), blocks: h)
        // Key/value groups first (k and v, plus q and o when every head is its own group), then q heads within groups.
        var g = [Float](repeating: 0, count: hk * hk)
        for a in 0..<hk { for b in 0..<hk {
            var s = ck[a * hk + b] + cv[a * hk + b]
            if group == 1 { s += cq[a * h + b] + co[a * h + b] }
            g[a * hk + b] = s
        } }
        let kvMatch = LinearAssignment.maximize(g, rows: hk, cols: hk)
        var kvOf = [Int](repeating: 0, count: hk)                // reference kv head → suspect kv head
        for (a, b) in kvMatch.enumerated() { kvOf[b!] = a }
        var qOf = [Int](repeating: 0, count: h)                  // reference head → suspect head
        var ambiguous: [Int] = []
        let features: Float = group == 1 ? 4 : 2
        for rg in 0..<hk {
            let sg = kvOf[rg]
            var sim = [Float](repeating: 0, count: group * group)
            for a in 0..<group { for b in 0..<group {
                let i = sg * group + a, j = rg * group + b
                sim[a * group + b] = cq[i * h + j] + co[i * h + j]
            } }
            let match = group == 1 ? [0] : LinearAssignment.maximize(sim, rows: group, cols: group).map { $0! }
            for (a, b) in match.enumerated() { qOf[rg * group + b] = sg * group + a }
            // Ambiguity of the group choice: weak, or barely ahead of another suspect group.
            let chosen = g[sg * hk + rg]
            let runnerUp = (0..<hk).filter { $0 != sg }.map { g[$0 * hk + rg] }.max() ?? -Float.infinity
            if chosen < 0.3 * (group == 1 ? features : 2) || chosen - runnerUp < 0.05 * (group == 1 ? features : 2) {
                ambiguous.append(contentsOf: (0..<group).map { rg * group + $0 })
            }
        }
        let moved = (0..<h).filter { qOf[$0] != $0 }.count
        // Confident: the chosen heads' q and o blocks agree with the reference as well as the identity check asks.
        let meanChosen = (0..<h).reduce(Float(0)) { $0 + cq[qOf[$1] * h + $1] + co[qOf[$1] * h + $1] } / Float(2 * h)
        guard meanChosen >= options.identityCosine else {
            return GroupFinding(kind: "heads", unit: "head", suspectUnits: h, referenceUnits: h, moved: 0, rescaled: 0, signFlips: 0, dropped: 0,
                                duplicated: 0, extra: 0, ambiguous: [], ambiguousCount: 0, residualBefore: before, residualAfter: before,
                                identityByCheck: false, leftAsStored: true)
        }
        guard moved > 0 || (0..<hk).contains(where: { kvOf[$0] != $0 }) else {
            return GroupFinding(kind: "heads", unit: "head", suspectUnits: h, referenceUnits: h, moved: 0, rescaled: 0, signFlips: 0, dropped: 0,
                                duplicated: 0, extra: 0, ambiguous: Array(ambiguous.prefix(16)), ambiguousCount: ambiguous.count,
                                residualBefore: before, residualAfter: before, identityByCheck: false)
        }
        // Row j of a block-permuted matrix is row of[j / hd]·hd + j % hd of the suspect's.
        func blockSources(_ of: [Int]) -> [Int] { (0..<(of.count * hd)).map { of[$0 / hd] * hd + $0 % hd } }
        func rowGather(_ m: Matrix, _ of: [Int]) -> TensorGather {
            TensorGather(shape: [m.rows, m.cols], sourceColumns: m.cols, sources: .rows(blockSources(of), divisors: nil))
        }
        let qg = rowGather(qs, qOf), kg = rowGather(ks, kvOf), vg = rowGather(vs, kvOf)
        let og = TensorGather(shape: [os.rows, os.cols], sourceColumns: os.cols, sources: .columns(blockSources(qOf).map { [(column: $0, factor: Float(1))] }))
        let after = relativeResidual([(qg, qs, qr), (kg, ks, kr), (vg, vs, vr), (og, os, or)])
        guard after < before else {
            return GroupFinding(kind: "heads", unit: "head", suspectUnits: h, referenceUnits: h, moved: 0, rescaled: 0, signFlips: 0, dropped: 0,
                                duplicated: 0, extra: 0, ambiguous: [], ambiguousCount: 0, residualBefore: before, residualAfter: before,
                                identityByCheck: false, leftAsStored: true)
        }
        ws.store(l.query, qg) { qg.applied(to: qs) }; ws.store(l.key, kg) { kg.applied(to: ks) }
        ws.store(l.value, vg) { vg.applied(to: vs) }; ws.store(l.attentionOutput, og) { og.applied(to: os) }
        for (bias, of) in [(l.queryBias, qOf), (l.keyBias, kvOf), (l.valueBias, kvOf)] {
            guard let bias, let b = try? ws.suspectMatrix(bias), b.count == of.count * hd else { continue }
            ws.set(bias, Matrix(rows: 1, cols: b.count, storage: blockSources(of).map { b.storage[$0] }))
        }
        return GroupFinding(kind: "heads", unit: "head", suspectUnits: h, referenceUnits: h, moved: moved, rescaled: 0, signFlips: 0, dropped: 0,
                            duplicated: 0, extra: 0, ambiguous: Array(ambiguous.prefix(16)), ambiguousCount: ambiguous.count,
                            residualBefore: before, residualAfter: after, identityByCheck: false)
    }

    /// Cosine of suspect block a with reference block b (blocks × blocks, row-major), where block a is the a-th of
    /// `blocks` equal consecutive slices of the matrix's storage: one matrix product.
    static func blockCosines(_ s: Matrix, _ r: Matrix, blocks: Int) -> [Float] {
        let width = s.count / blocks
        precondition(width * blocks == s.count && s.count == r.count)
        var gram = [Float](repeating: 0, count: blocks * blocks)
        s.storage.withUnsafeBufferPointer { ps in
            r.storage.withUnsafeBufferPointer { pr in
                gram.withUnsafeMutableBufferPointer { pg in
                    BLAS.gemm(m: blocks, n: blocks, k: width, a: ps.baseAddress!, lda: width, b: pr.baseAddress!, ldb: width,
                              transB: .transposed, c: pg.baseAddress!, ldc: blocks)
                }
            }
        }
        func norms(_ m: Matrix) -> [Double] {
            m.storage.withUnsafeBufferPointer { p in
                (0..<blocks).map { a in
                    let x = UnsafeBufferPointer(rebasing: p[(a * width)..<((a + 1) * width)])
                    return BLAS.dot(x, x).squareRoot()
                }
            }
        }
        let ns = norms(s), nr = norms(r)
        for a in 0..<blocks { for b in 0..<blocks {
            gram[a * blocks + b] = ns[a] > 0 && nr[b] > 0 ? Float(Double(gram[a * blocks + b]) / (ns[a] * nr[b])) : 0
        } }
        return gram
    }

    /// o (d × heads·hd) with each head's column block gathered into one contiguous d × hd slice, head after head.
    static func headMajor(_ m: Matrix, heads h: Int) -> Matrix {
        let hd = m.cols / h, d = m.rows
        var out = Matrix(rows: h, cols: d * hd)
        out.storage.withUnsafeMutableBufferPointer { o in
            m.storage.withUnsafeBufferPointer { s in
                for a in 0..<h { for r in 0..<d {
                    let dst = a * d * hd + r * hd, src = r * m.cols + a * hd
                    for t in 0..<hd { o[dst + t] = s[src + t] }
                } }
            }
        }
        return out
    }

    // MARK: - FFN hidden units

    /// The margins of the FFN unit search, as multiples of the number of compared features nf (2 without a gate,
    /// 3 with one: each feature's cosine is at most 1). docs/ALIGNMENT.md explains each.
    enum UnitMargin {
        /// A matched unit is doubtful (reported as ambiguous) below this similarity…
        static let doubtfulSimilarity: Float = 0.3
        /// …or when its match beats the runner-up by less than this.
        static let doubtfulMargin: Float = 0.05
        /// With fewer suspect units than reference units, a match below this is no match (the reference unit dropped).
        static let forcedMatch: Float = 0.5
        /// An extra suspect unit at least this similar to a matched reference unit is a duplicate, merged into it.
        static let duplicate: Float = 0.6
        /// A layer counts as rescaled when a fitted scale is negative or at least 1/`rescaledShare` of the units are off
        /// by more than `rescaledDeviation` (quantization moves a fitted scale by ~damage/√d, ≈ 0.02 for int2 at d = 384).
        static let rescaledDeviation: Float = 0.1
        static let rescaledShare = 20
    }

    /// One layer's FFN: its matrices' names and sizes, and how its units may be edited without changing the function.
    struct FFNLayer {
        let layer: TransformerLayout.Layer
        let activation: TransformerLayout.Activation
        /// Suspect and reference units, the input width and the output width.
        let ns: Int, nr: Int, d: Int, dOut: Int
        /// Whether units can be rescaled without changing the function (SwiGLU: any sign; ReLU: positive only).
        var scalable: Bool { activation != .gelu }
        /// Features compared per unit: up row, down column, and the gate row when there is one.
        var nf: Float { layer.gate == nil ? 2 : 3 }

        /// Per-unit scale from the up path, c = ⟨up_s, up_r⟩ / ‖up_r‖².
        func fittedScale(dot: Double, referenceSquares nn: Double) -> Float {
            guard scalable, nn > 0 else { return 1 }
            let c = Float(dot / nn)
            if (activation == .relu && c <= 0) || abs(c) < 1e-6 { return 1 }
            return c
        }

        /// The layer counts as rescaled when some unit's scale is clearly not 1 (`UnitMargin`); then every unit's
        /// fitted scale is divided out (exactly), otherwise none (estimation noise of an unscaled layer is left alone).
        func isScaled(_ fitted: [Float]) -> Bool {
            scalable && (fitted.contains { $0 < 0 }
                || fitted.filter { abs($0 - 1) > UnitMargin.rescaledDeviation }.count >= max(1, ns / UnitMargin.rescaledShare))
        }

        /// The similarity of a unit pair from its features' cosines, as the identity check and the search combine them.
        func similarity(up cu: Float, down cd: Float, gate cg: Float) -> Float {
            activation == .swiglu ? cg + abs(cu + cd) : cg + cu + cd
        }
    }

    /// The decoded matrices of one layer's FFN, suspect (s) and reference (r).
    struct FFNMatrices {
        let ups: Matrix, gates: Matrix?, downs: Matrix, upr: Matrix, gater: Matrix?, downr: Matrix
    }

    /// Where each suspect unit went: its reference unit (nil: none), and when searched, the similarity of its match
    /// (on full rows), its margin over the runner-up (on the compared features) and its best reference unit.
    struct UnitMatch {
        var match: [Int?]
        var searched = false
        var chosen: [Float]
        var margin: [Float]
        var best: [(unit: Int, similarity: Float)]

        static func identity(_ n: Int) -> UnitMatch {
            UnitMatch(match: (0..<n).map { $0 }, chosen: [Float](repeating: 0, count: n),
                      margin: [Float](repeating: .infinity, count: n), best: [(unit: Int, similarity: Float)](repeating: (0, 0), count: n))
        }
    }

    /// Aligns one layer's FFN units (docs/ALIGNMENT.md, "FFN units"): shapes → already aligned? → unit search →
    /// scales and sources → accept or leave as stored.
    static func alignFFN(_ ws: Workspace, _ l: TransformerLayout.Layer, _ activation: TransformerLayout.Activation,
                         _ options: AlignOptions, _ notes: inout [String]) throws -> GroupFinding? {
        guard let f = ffnLayer(ws, l, activation) else {
            notes.append("layer \(l.index): FFN not aligned (up/gate/down missing or inconsistent in the suspect)")
            return nil
        }
        let check = try checkAligned(ws, f, options)
        if let finding = check.finding { return finding }
        var before = check.before
        let decoded = try ws.matrices([l.up, l.gate, l.down].map { ($0, false) } + [l.up, l.gate, l.down].map { ($0, true) })
        let m = FFNMatrices(ups: decoded[0]!, gates: decoded[1], downs: decoded[2]!, upr: decoded[3]!, gater: decoded[4], downr: decoded[5]!)
        if f.ns == f.nr && before == nil {
            before = relativeResidual([(m.ups, m.upr), (m.downs, m.downr)] + (m.gates.map { [($0, m.gater!)] } ?? []))
        }
        let units = check.identityByCheck ? UnitMatch.identity(f.ns) : searchUnits(f, m, options)
        return try applyUnitMatch(ws, f, m, units, before: before, identityByCheck: check.identityByCheck, options)
    }

    /// The layer's FFN shapes, when up, gate and down are present and consistent in both models.
    static func ffnLayer(_ ws: Workspace, _ l: TransformerLayout.Layer, _ activation: TransformerLayout.Activation) -> FFNLayer? {
        guard let su = ws.shape(suspect: l.up), let ru = ws.shape(reference: l.up), let sd = ws.shape(suspect: l.down),
              let rd = ws.shape(reference: l.down), su.count == 2, ru.count == 2, sd.count == 2, rd.count == 2,
              su[1] == ru[1], sd[0] == rd[0], sd[1] == su[0], rd[1] == ru[0],
              l.gate.map({ ws.shape(suspect: $0) == su && ws.shape(reference: $0) == ru }) ?? true else { return nil }
        return FFNLayer(layer: l, activation: activation, ns: su[0], nr: ru[0], d: su[1], dOut: sd[0])
    }

    /// Already aligned? One streamed pass: each unit's up row, gate row and down column against the same-index
    /// reference unit, without decoding whole matrices. An unscaled aligned layer ends here (`finding`).
    static func checkAligned(_ ws: Workspace, _ f: FFNLayer, _ options: AlignOptions) throws
        -> (finding: GroupFinding?, before: Double?, identityByCheck: Bool) {
        let l = f.layer, ns = f.ns, d = f.d
        // A few units read alone can already rule the identity out: with |cos(down)| ≤ 1 the identity check's
        // similarity of unit i is at most cos(gate) + |cos(up)| + 1, so one sampled unit below the threshold settles it
        // (a permuted layer) without the streamed pass.
        func identityRuledOut() throws -> Bool {
            var a = [Float](repeating: 0, count: d), b = a
            func rowCosine(_ name: String, _ i: Int) throws -> Float {
                try a.withUnsafeMutableBufferPointer { try ws.readSuspect(name, rows: i..<(i + 1), into: $0) }
                try b.withUnsafeMutableBufferPointer { try ws.readReference(name, rows: i..<(i + 1), into: $0) }
                return cosine(a, 0, b, 0, d)
            }
            for i in stride(from: 0, to: ns, by: max(1, ns / 16)) {
                let cu = try rowCosine(l.up, i), cg = try l.gate.map { try rowCosine($0, i) } ?? 0
                if (f.activation == .swiglu ? cg + abs(cu) : cg + cu) + 1 < options.identityCosine * f.nf { return true }
            }
            return false
        }
        guard ns == f.nr, try !identityRuledOut() else { return (nil, nil, false) }
        let up = try ws.statistics(l.up, along: .rows, groupSize: 1)
        let down = try ws.statistics(l.down, along: .columns, groupSize: 1)
        let gate = try l.gate.map { try ws.statistics($0, along: .rows, groupSize: 1) }
        let before = PairStatistics.relativeResidual([up, down] + (gate.map { [$0] } ?? []))
        let identity = (0..<ns).allSatisfy { i in
            f.similarity(up: up.cosine(i), down: down.cosine(i), gate: gate?.cosine(i) ?? 0) >= options.identityCosine * f.nf
        }
        if identity && !f.isScaled((0..<ns).map { f.fittedScale(dot: up.dot[$0], referenceSquares: up.referenceSquares[$0]) }) {
            return (GroupFinding(kind: "ffn", unit: "unit", suspectUnits: ns, referenceUnits: f.nr, moved: 0, rescaled: 0, signFlips: 0,
                                 dropped: 0, duplicated: 0, extra: 0, ambiguous: [], ambiguousCount: 0, residualBefore: before,
                                 residualAfter: before, identityByCheck: true), before, true)
        }
        return (nil, before, identity)
    }

    /// The unit search: cosine matrices of unit features, combined as in the identity check, then the optimal
    /// assignment. Wide features go through a fixed count sketch (rows of up/gate and columns of down sketched in
    /// place, no transposes): a narrow one first; when its matches leave doubt (more than 1% ambiguous, or not
    /// confident on full rows), a 4× wider one. Sketched matches are verified on full rows.
    static func searchUnits(_ f: FFNLayer, _ m: FFNMatrices, _ options: AlignOptions) -> UnitMatch {
        let (ns, nr, d, dOut, nf) = (f.ns, f.nr, f.d, f.dOut, f.nf)
        var u = UnitMatch.identity(ns)
        u.searched = true
        // Similarity on full rows: cosines of the up rows, gate rows and down columns, one sweep over down's rows.
        func exactSimilarities(_ pairs: [(Int, Int)]) -> [Float] {
            var dot = [Double](repeating: 0, count: pairs.count), ss = dot, rr = dot
            let pi = pairs.map(\.0), pj = pairs.map(\.1)
            m.downs.storage.withUnsafeBufferPointer { s in
                m.downr.storage.withUnsafeBufferPointer { r in
                    dot.withUnsafeMutableBufferPointer { dp in ss.withUnsafeMutableBufferPointer { sp in rr.withUnsafeMutableBufferPointer { rp in
                        pi.withUnsafeBufferPointer { ip in pj.withUnsafeBufferPointer { jp in
                            for row in 0..<dOut {
                                let sRow = s.baseAddress! + row * ns, rRow = r.baseAddress! + row * nr
                                for p in 0..<ip.count {
                                    let a = Double(sRow[ip[p]]), b = Double(rRow[jp[p]])
                                    dp[p] += a * b; sp[p] += a * a; rp[p] += b * b
                                }
                            }
                        } }
                    } } }
                }
            }
            return pairs.enumerated().map { p, pair in
                let (i, j) = pair
                let cu = cosine(m.ups.storage, i * d, m.upr.storage, j * d, d)
                let cd = ss[p] > 0 && rr[p] > 0 ? Float(dot[p] / (ss[p] * rr[p]).squareRoot()) : 0
                let cg = m.gates.map { cosine($0.storage, i * d, m.gater!.storage, j * d, d) } ?? 0
                return f.similarity(up: cu, down: cd, gate: cg)
            }
        }
        var width = options.sketchColumns
        while true {
            let sketch = d > options.exactFeatureLimit || dOut > options.exactFeatureLimit
            let rowSketch = sketch && d > width ? CountSketch(inputs: d, outputs: width) : nil
            let columnSketch = sketch && dOut > width ? CountSketch(inputs: dOut, outputs: width) : nil
            func rowFeatures(_ x: Matrix) -> Matrix {
                var features = rowSketch.map { $0.sketchingRows(of: x) } ?? x
                normalizeRows(&features)
                return features
            }
            func columnFeatures(_ x: Matrix) -> Matrix {
                var features = columnSketch.map { $0.sketchingColumns(of: x) } ?? x.transposed
                normalizeRows(&features)
                return features
            }
            // cos(up) + cos(down) as one product of concatenated features; then |·| for SwiGLU, then + cos(gate).
            let (sim, arg, top, second) = unitSimilarities(
                side(by: rowFeatures(m.ups), columnFeatures(m.downs)), side(by: rowFeatures(m.upr), columnFeatures(m.downr)),
                absolute: f.activation == .swiglu, plus: m.gates.map { rowFeatures($0) }, m.gater.map { rowFeatures($0) })
            // Every row's best column distinct: that is the optimal assignment (what LinearAssignment returns).
            if ns <= nr, Set(arg).count == ns {
                u.match = arg.map { Optional($0) }
            } else {
                u.match = LinearAssignment.maximize(sim, rows: ns, cols: nr)
            }
            let pairs = (0..<ns).compactMap { i in u.match[i].map { (i, $0) } }
            let verified = sketch ? exactSimilarities(pairs) : pairs.map { sim[$0.0 * nr + $0.1] }
            for (p, (i, j)) in pairs.enumerated() {
                u.chosen[i] = verified[p]
                u.margin[i] = sim[i * nr + j] - (j == arg[i] ? second[i] : top[i])
            }
            // With fewer suspect units than reference units, a forced match to an unrelated unit (a suspect unit
            // whose real counterpart is taken, as a duplicate's is) is no match: that reference unit counts as
            // dropped. With equal counts every unit keeps its match (a permutation; noise only weakens similarities).
            if ns < nr { for i in 0..<ns where u.match[i] != nil && u.chosen[i] < UnitMargin.forcedMatch * nf { u.match[i] = nil } }
            for i in 0..<ns where u.match[i] == nil { u.best[i] = (arg[i], top[i]) }
            let unmatched = (0..<ns).filter { u.match[$0] == nil }
            if sketch && !unmatched.isEmpty {
                for (i, s) in zip(unmatched, exactSimilarities(unmatched.map { ($0, arg[$0]) })) { u.best[i].similarity = s }
            }
            let kept = pairs.filter { u.match[$0.0] != nil }
            let doubtful = kept.filter { isDoubtful(u, $0.0, nf) }.count
            let confident = !kept.isEmpty && kept.reduce(Float(0)) { $0 + u.chosen[$1.0] } / Float(kept.count) >= options.identityCosine * nf
            if !sketch || width >= 4 * options.sketchColumns || (confident && doubtful * 100 <= ns) { break }
            width *= 4
        }
        return u
    }

    static func isDoubtful(_ u: UnitMatch, _ i: Int, _ nf: Float) -> Bool {
        u.chosen[i] < UnitMargin.doubtfulSimilarity * nf || u.margin[i] < UnitMargin.doubtfulMargin * nf
    }

    /// Scales and sources: where each reference unit comes from (up row ÷ c, gate row, down column × c, plus merged
    /// duplicates); the result is kept only when it is a confident match that fits the reference better than the
    /// suspect as stored, and then stored in the workspace.
    static func applyUnitMatch(_ ws: Workspace, _ f: FFNLayer, _ m: FFNMatrices, _ u: UnitMatch, before: Double?,
                               identityByCheck: Bool, _ options: AlignOptions) throws -> GroupFinding {
        let l = f.layer, (ns, nr, d, dOut, nf) = (f.ns, f.nr, f.d, f.dOut, f.nf)
        func rawScale(_ i: Int, _ j: Int) -> Float {
            guard f.scalable else { return 1 }
            return m.ups.storage.withUnsafeBufferPointer { s in
                m.upr.storage.withUnsafeBufferPointer { r in
                    let x = UnsafeBufferPointer(rebasing: s[(i * d)..<((i + 1) * d)]), y = UnsafeBufferPointer(rebasing: r[(j * d)..<((j + 1) * d)])
                    return f.fittedScale(dot: BLAS.dot(x, y), referenceSquares: BLAS.dot(y, y))
                }
            }
        }
        let layerScaled = f.isScaled((0..<ns).compactMap { i in u.match[i].map { rawScale(i, $0) } })
        func scale(_ i: Int, _ j: Int) -> Float { layerScaled ? rawScale(i, j) : 1 }

        var rowSources = [Int?](repeating: nil, count: nr), divisors = [Float](repeating: 1, count: nr)
        var columnSources = [[(column: Int, factor: Float)]](repeating: [], count: nr)
        let biass = try l.upBias.flatMap { ws.shape(suspect: $0) == [ns] ? try ws.suspectMatrix($0) : nil }
        var biasa = [Float](repeating: 0, count: nr)
        var moved = 0, rescaled = 0, flips = 0, duplicated = 0, extra = 0
        var ambiguous: [Int] = []
        var assigned = [Bool](repeating: false, count: nr)
        for i in 0..<ns {
            guard let j = u.match[i] else { continue }
            assigned[j] = true
            if i != j { moved += 1 }
            let c = scale(i, j)
            if abs(c - 1) > options.scaleTolerance { rescaled += 1; if c < 0 { flips += 1 } }
            rowSources[j] = i; divisors[j] = c
            columnSources[j] = [(i, c)]
            if let biass { biasa[j] = biass.storage[i] / c }
            if u.searched && isDoubtful(u, i, nf) { ambiguous.append(j) }
        }
        // Suspect units beyond the reference's count: a duplicate (same input row, output column split) is merged into
        // the unit it copies; anything else is left out.
        for i in 0..<ns where u.match[i] == nil {
            let arg = u.best[i].unit
            guard u.best[i].similarity >= UnitMargin.duplicate * nf, assigned[arg] else { extra += 1; continue }
            columnSources[arg].append((i, scale(i, arg)))
            duplicated += 1
        }
        let dropped = assigned.filter { !$0 }.count
        let changed = moved > 0 || rescaled > 0 || dropped > 0 || duplicated > 0 || extra > 0 || ns != nr
        let upGather = TensorGather(shape: [nr, d], sourceColumns: d, sources: .rows(rowSources, divisors: divisors))
        let gateGather = TensorGather(shape: [nr, d], sourceColumns: d, sources: .rows(rowSources, divisors: nil))
        let downGather = TensorGather(shape: [dOut, nr], sourceColumns: ns, sources: .columns(columnSources))
        var after = before ?? 0
        if changed {
            after = relativeResidual([(upGather, m.ups, m.upr), (downGather, m.downs, m.downr)] + (m.gates.map { [(gateGather, $0, m.gater!)] } ?? []))
        }
        // A search result is used only when it is a confident match (mean matched similarity as high as the identity
        // check asks of an aligned copy) that fits the reference better than the suspect as stored.
        let matchedSims = (0..<ns).compactMap { i in u.match[i].map { _ in u.searched ? u.chosen[i] : options.identityCosine * nf } }
        let confident = !matchedSims.isEmpty && matchedSims.reduce(0, +) / Float(matchedSims.count) >= options.identityCosine * nf
        if changed && ((!identityByCheck && !confident) || (before.map { after >= $0 } ?? false)) {
            return GroupFinding(kind: "ffn", unit: "unit", suspectUnits: ns, referenceUnits: nr, moved: 0, rescaled: 0, signFlips: 0,
                                dropped: 0, duplicated: 0, extra: 0, ambiguous: [], ambiguousCount: 0, residualBefore: before,
                                residualAfter: before ?? after, identityByCheck: false, leftAsStored: true)
        }
        if changed {
            ws.store(l.up, upGather) { upGather.applied(to: m.ups) }
            ws.store(l.down, downGather) { downGather.applied(to: m.downs) }
            if let g = l.gate, let gates = m.gates { ws.store(g, gateGather) { gateGather.applied(to: gates) } }
            if let b = l.upBias, biass != nil { ws.set(b, Matrix(rows: 1, cols: nr, storage: biasa)) }
        }
        return GroupFinding(kind: "ffn", unit: "unit", suspectUnits: ns, referenceUnits: nr, moved: moved, rescaled: rescaled, signFlips: flips,
                            dropped: dropped, duplicated: duplicated, extra: extra, ambiguous: Array(ambiguous.prefix(16)),
                            ambiguousCount: ambiguous.count, residualBefore: before, residualAfter: after, identityByCheck: identityByCheck)
    }

    /// [a | b]: the rows of `a` and `b` side by side.
    static func side(by a: Matrix, _ b: Matrix) -> Matrix {
        precondition(a.rows == b.rows)
        var out = Matrix(rows: a.rows, cols: a.cols + b.cols)
        for i in 0..<a.rows {
            out.storage.replaceSubrange((i * out.cols)..<(i * out.cols + a.cols), with: a.storage[(i * a.cols)..<((i + 1) * a.cols)])
            out.storage.replaceSubrange((i * out.cols + a.cols)..<((i + 1) * out.cols), with: b.storage[(i * b.cols)..<((i + 1) * b.cols)])
        }
        return out
    }

    /// S = a·bᵀ (|a·bᵀ| when `absolute`) + ga·gbᵀ, computed in blocks of rows, with each row's best column (the first
    /// maximum) and its two largest values taken while the block is in cache.
    static func unitSimilarities(_ a: Matrix, _ b: Matrix, absolute: Bool, plus ga: Matrix?, _ gb: Matrix?)
        -> (values: [Float], best: [Int], top: [Float], second: [Float]) {
        precondition(a.cols == b.cols && (ga?.cols ?? 0) == (gb?.cols ?? 0) && (ga?.rows ?? a.rows) == a.rows && (gb?.rows ?? b.rows) == b.rows)
        let ns = a.rows, nr = b.rows
        var best = [Int](repeating: 0, count: ns), top = [Float](repeating: 0, count: ns), second = top
        guard ns > 0, nr > 0 else { return ([], best, top, second) }
        let block = max(1, min(ns, (1 << 19) / nr))
        var sim = [Float](repeating: 0, count: ns * nr)
        let blocks = (ns + block - 1) / block
        sim.withUnsafeMutableBufferPointer { c in
          best.withUnsafeMutableBufferPointer { bestOut in
            top.withUnsafeMutableBufferPointer { topOut in
              second.withUnsafeMutableBufferPointer { secondOut in
            a.storage.withUnsafeBufferPointer { pa in
                b.storage.withUnsafeBufferPointer { pb in
                    // Unsafe: blocks write disjoint rows of the output buffers, which outlive the loop; the
                    // inputs are only read.
                    nonisolated(unsafe) let (c, bestOut, topOut, secondOut, pa, pb) = (c, bestOut, topOut, secondOut, pa, pb)
                    DispatchQueue.concurrentPerform(iterations: blocks) { index in
                        let start = index * block
                        let m = min(block, ns - start), out = c.baseAddress! + start * nr
                        if a.cols > 0 {
                            BLAS.gemm(m: m, n: nr, k: a.cols, a: pa.baseAddress! + start * a.cols, lda: a.cols, b: pb.baseAddress!, ldb: b.cols,
                                      transB: .transposed, c: out, ldc: nr)
                        }
                        if absolute { for k in 0..<(m * nr) { out[k] = abs(out[k]) } }
                        if let ga, let gb, ga.cols > 0 {
                            ga.storage.withUnsafeBufferPointer { qa in
                                gb.storage.withUnsafeBufferPointer { qb in
                                    BLAS.gemm(m: m, n: nr, k: ga.cols, a: qa.baseAddress! + start * ga.cols, lda: ga.cols, b: qb.baseAddress!,
                                              ldb: gb.cols, transB: .transposed, beta: 1, c: out, ldc: nr)
                                }
                            }
                        }
                        for i in 0..<m {
                            var t = -Float.infinity, s2 = -Float.infinity, arg = 0
                            for j in 0..<nr {
                                let x = out[i * nr + j]
                                if x > t { s2 = t; t = x; arg = j } else if x > s2 { s2 = x }
                            }
                            bestOut[start + i] = arg; topOut[start + i] = t; secondOut[start + i] = s2
                        }
                    }
                }
            }
              }
            }
          }
        }
        return (sim, best, top, second)
    }

    // MARK: - Helpers

    static func cosine(_ a: [Float], _ ia: Int, _ b: [Float], _ ib: Int, _ n: Int) -> Float {
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                let x = UnsafeBufferPointer(rebasing: pa[ia..<(ia + n)]), y = UnsafeBufferPointer(rebasing: pb[ib..<(ib + n)])
                let xy = BLAS.dot(x, y), xx = BLAS.dot(x, x), yy = BLAS.dot(y, y)
                return xx > 0 && yy > 0 ? Float(xy / (xx * yy).squareRoot()) : 0
            }
        }
    }

    static func normalizeRows(_ m: inout Matrix) {
        let n = m.cols
        m.storage.withUnsafeMutableBufferPointer { p in
            for i in 0..<m.rows {
                var s: Float = 0
                for k in 0..<n { s += p[i * n + k] * p[i * n + k] }
                guard s > 0 else { continue }
                let inv = 1 / s.squareRoot()
                for k in 0..<n { p[i * n + k] *= inv }
            }
        }
    }

    /// sqrt(Σ‖G − R‖² / Σ‖R‖²) over gathered matrices G (gather, suspect matrix, reference), without holding G.
    static func relativeResidual(_ gathered: [(TensorGather, Matrix, Matrix)]) -> Double {
        var num = 0.0, den = 0.0
        for (g, s, r) in gathered {
            let (a, b) = g.residualSums(from: s, against: r)
            num += a; den += b
        }
        return den > 0 ? (num / den).squareRoot() : 0
    }

    /// sqrt(Σ‖S − R‖² / Σ‖R‖²) over same-shaped pairs, accumulated in double precision. Differences are taken in
    /// single precision, exact when the two values are within a factor 2 of each other (Sterbenz), so a close fit is
    /// measured exactly.
    static func relativeResidual(_ pairs: [(Matrix, Matrix)]) -> Double {
        var num = 0.0, den = 0.0
        var diff = [Float](repeating: 0, count: 4096)
        for (s, r) in pairs where s.count == r.count {
            s.storage.withUnsafeBufferPointer { ps in
                r.storage.withUnsafeBufferPointer { pr in
                    diff.withUnsafeMutableBufferPointer { pd in
                        for start in stride(from: 0, to: s.count, by: pd.count) {
                            let n = min(pd.count, s.count - start)
                            for k in 0..<n { pd[k] = ps[start + k] - pr[start + k] }
                            let d = UnsafeBufferPointer(rebasing: pd[0..<n]), y = UnsafeBufferPointer(rebasing: pr[start..<(start + n)])
                            num += BLAS.dot(d, d); den += BLAS.dot(y, y)
                        }
                    }
                }
            }
        }
        return den > 0 ? (num / den).squareRoot() : 0
    }
}

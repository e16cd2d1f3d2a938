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
    /// Unit features wider than twice this are compared through a fixed sparse random sketch of this many columns.
    public var sketchColumns = 128
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

        func s(_ name: String) throws -> Matrix {
            if let o = overrides[name] { return o }
            if let g = gathers[name] { return g.applied(to: try Self.matrix(suspect, name)) }
            return try Self.matrix(suspect, name)
        }

        /// Records the rewrite of `name`: as a gather over the suspect when the suspect's tensor is untouched so far,
        /// else as the floats `applied` (the gather applied to the tensor as aligned so far).
        func set(_ name: String, _ m: Matrix) { gathers[name] = nil; overrides[name] = m }

        func store(_ name: String, _ gather: TensorGather, applied: Matrix) {
            if overrides[name] == nil && gathers[name] == nil {
                gathers[name] = gather
            } else {
                gathers[name] = nil
                overrides[name] = applied
            }
        }
        func r(_ name: String) throws -> Matrix { try Self.matrix(reference, name) }
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
        let es = try ws.s(e), er = try ws.r(e)
        // Orthogonal Procrustes: Q = argmin ‖E_r Q − E_s‖ over orthogonal Q = U Vᵀ, with E_rᵀ E_s = U Σ Vᵀ.
        let m = BLAS.matmul(er, es, transA: .transposed)
        let (u, _, vt) = try LAPACK.svd(m)
        let q = BLAS.matmul(u, vt)
        ws.set(e, BLAS.matmul(es, q, transB: .transposed))
        func rotate(reading name: String?) throws {
            guard let name, let sh = ws.shape(suspect: name), sh.count == 2, sh[1] == d else { return }
            ws.set(name, BLAS.matmul(try ws.s(name), q, transB: .transposed))
        }
        func rotate(writing name: String?) throws {
            guard let name, let sh = ws.shape(suspect: name), sh.count == 2, sh[0] == d else { return }
            ws.set(name, BLAS.matmul(q, try ws.s(name)))
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
            if let norm, let gs = try? ws.s(norm).storage, let gr = try? ws.r(norm).storage, gs.count == d, gr.count == d {
                knownFused = gs.allSatisfy { abs($0 - 1) < 1e-3 } && gr.contains { abs($0 - 1) > options.scaleTolerance }
            }
            if knownFused == false { return }
            let probes = probe.compactMap { $0 }.filter { ws.shape(suspect: $0)?.last == d && ws.shape(reference: $0)?.last == d }
            guard !probes.isEmpty else { return }
            var ns = [Double](repeating: 0, count: d), nr = [Double](repeating: 0, count: d)
            var ss = [Double](repeating: 0, count: d), sr = [Double](repeating: 0, count: d)
            for p in probes {
                let s = try ws.s(p), r = try ws.r(p)
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
                guard var w = try? ws.s(name), w.cols == d else { continue }
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
        // Already aligned: every head's blocks agree with the same-index reference head. One streamed pass, per-head
        // inner products of q/k/v row blocks and o column blocks.
        let qStats = try ws.statistics(l.query, along: .rows, groupSize: hd), kStats = try ws.statistics(l.key, along: .rows, groupSize: hd)
        let vStats = try ws.statistics(l.value, along: .rows, groupSize: hd)
        let oStats = try ws.statistics(l.attentionOutput, along: .columns, groupSize: hd)
        let before = PairStatistics.relativeResidual([qStats, kStats, vStats, oStats])
        let identity = (0..<h).allSatisfy { qStats.cosine($0) >= options.identityCosine && oStats.cosine($0) >= options.identityCosine }
            && (0..<hk).allSatisfy { kStats.cosine($0) >= options.identityCosine && vStats.cosine($0) >= options.identityCosine }
        if identity {
            return GroupFinding(kind: "heads", unit: "head", suspectUnits: h, referenceUnits: h, moved: 0, rescaled: 0, signFlips: 0, dropped: 0,
                                duplicated: 0, extra: 0, ambiguous: [], ambiguousCount: 0, residualBefore: before, residualAfter: before, identityByCheck: true)
        }
        let qs = try ws.s(l.query), ks = try ws.s(l.key), vs = try ws.s(l.value), os = try ws.s(l.attentionOutput)
        let qr = try ws.r(l.query), kr = try ws.r(l.key), vr = try ws.r(l.value), or = try ws.r(l.attentionOutput)
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
        let qa = qg.applied(to: qs), ka = kg.applied(to: ks), va = vg.applied(to: vs), oa = og.applied(to: os)
        let after = relativeResidual([(qa, qr), (ka, kr), (va, vr), (oa, or)])
        guard after < before else {
            return GroupFinding(kind: "heads", unit: "head", suspectUnits: h, referenceUnits: h, moved: 0, rescaled: 0, signFlips: 0, dropped: 0,
                                duplicated: 0, extra: 0, ambiguous: [], ambiguousCount: 0, residualBefore: before, residualAfter: before,
                                identityByCheck: false, leftAsStored: true)
        }
        ws.store(l.query, qg, applied: qa); ws.store(l.key, kg, applied: ka); ws.store(l.value, vg, applied: va)
        ws.store(l.attentionOutput, og, applied: oa)
        for (bias, of) in [(l.queryBias, qOf), (l.keyBias, kvOf), (l.valueBias, kvOf)] {
            guard let bias, let b = try? ws.s(bias), b.count == of.count * hd else { continue }
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

    static func alignFFN(_ ws: Workspace, _ l: TransformerLayout.Layer, _ activation: TransformerLayout.Activation,
                         _ options: AlignOptions, _ notes: inout [String]) throws -> GroupFinding? {
        guard let su = ws.shape(suspect: l.up), let ru = ws.shape(reference: l.up), let sd = ws.shape(suspect: l.down),
              let rd = ws.shape(reference: l.down), su.count == 2, ru.count == 2, sd.count == 2, rd.count == 2,
              su[1] == ru[1], sd[0] == rd[0], sd[1] == su[0], rd[1] == ru[0],
              l.gate.map({ ws.shape(suspect: $0) == su && ws.shape(reference: $0) == ru }) ?? true else {
            notes.append("layer \(l.index): FFN not aligned (up/gate/down missing or inconsistent in the suspect)")
            return nil
        }
        let ns = su[0], nr = ru[0], d = su[1], dOut = sd[0]
        let scalable = activation != .gelu
        let nf: Float = l.gate == nil ? 2 : 3

        // Per-unit scale from the up path, c = ⟨up_s, up_r⟩ / ‖up_r‖² (SwiGLU: any sign; ReLU: positive only).
        func fittedScale(dot: Double, referenceSquares nn: Double) -> Float {
            guard scalable, nn > 0 else { return 1 }
            let c = Float(dot / nn)
            if (activation == .relu && c <= 0) || abs(c) < 1e-6 { return 1 }
            return c
        }
        // The layer counts as rescaled when some unit's scale is clearly not 1; then every unit's fitted scale is divided
        // out (exactly), otherwise none (estimation noise of an unscaled layer is left alone).
        // Quantization noise moves a fitted scale by ~damage/√d (≈ 0.02 for int2 at d = 384); a rescaling attack moves
        // most units far more, so "clearly" means: a sign flip, or ≥ 5% of the units off by more than 0.1.
        func isScaled(_ fitted: [Float]) -> Bool {
            scalable && (fitted.contains { $0 < 0 } || fitted.filter { abs($0 - 1) > 0.1 }.count >= max(1, ns / 20))
        }

        // Already aligned? One streamed pass: each unit's up row, gate row and down column against the same-index
        // reference unit, without decoding whole matrices. An unscaled aligned layer ends here.
        var before: Double?
        var identityByCheck = false
        if ns == nr {
            let up = try ws.statistics(l.up, along: .rows, groupSize: 1)
            let down = try ws.statistics(l.down, along: .columns, groupSize: 1)
            let gate = try l.gate.map { try ws.statistics($0, along: .rows, groupSize: 1) }
            before = PairStatistics.relativeResidual([up, down] + (gate.map { [$0] } ?? []))
            identityByCheck = (0..<ns).allSatisfy { i in
                let cu = up.cosine(i), cd = down.cosine(i), cg = gate?.cosine(i) ?? 0
                return (activation == .swiglu ? cg + abs(cu + cd) : cg + cu + cd) >= options.identityCosine * nf
            }
            if identityByCheck && !isScaled((0..<ns).map { fittedScale(dot: up.dot[$0], referenceSquares: up.referenceSquares[$0]) }) {
                return GroupFinding(kind: "ffn", unit: "unit", suspectUnits: ns, referenceUnits: nr, moved: 0, rescaled: 0, signFlips: 0,
                                    dropped: 0, duplicated: 0, extra: 0, ambiguous: [], ambiguousCount: 0, residualBefore: before,
                                    residualAfter: before!, identityByCheck: true)
            }
        }

        let ups = try ws.s(l.up), upr = try ws.r(l.up)
        let gates = try l.gate.map { try ws.s($0) }, gater = try l.gate.map { try ws.r($0) }
        let downs = try ws.s(l.down), downr = try ws.r(l.down)

        var match = [Int?](repeating: nil, count: ns)             // suspect unit → reference unit
        var sim: [Float] = []                                     // ns×nr when searched
        if identityByCheck {
            for i in 0..<ns { match[i] = i }
        } else {
            // Full search: cosine matrices of unit features, combined as in the identity check. Wide features go
            // through a fixed count sketch (rows of up/gate and columns of down sketched in place, no transposes).
            let sketch = d > 2 * options.sketchColumns || dOut > 2 * options.sketchColumns
            let rowSketch = sketch && d > options.sketchColumns ? CountSketch(inputs: d, outputs: options.sketchColumns) : nil
            let columnSketch = sketch && dOut > options.sketchColumns ? CountSketch(inputs: dOut, outputs: options.sketchColumns) : nil
            func rowFeatures(_ m: Matrix) -> Matrix {
                var f = rowSketch.map { $0.sketchingRows(of: m) } ?? m
                normalizeRows(&f)
                return f
            }
            func columnFeatures(_ m: Matrix) -> Matrix {
                var f = columnSketch.map { $0.sketchingColumns(of: m) } ?? m.transposed
                normalizeRows(&f)
                return f
            }
            sim = BLAS.matmul(rowFeatures(ups), rowFeatures(upr), transB: .transposed).storage
            let cd = BLAS.matmul(columnFeatures(downs), columnFeatures(downr), transB: .transposed)
            if activation == .swiglu {
                for k in sim.indices { sim[k] = abs(sim[k] + cd.storage[k]) }
            } else {
                for k in sim.indices { sim[k] += cd.storage[k] }
            }
            if let gates, let gater {
                let cg = BLAS.matmul(rowFeatures(gates), rowFeatures(gater), transB: .transposed)
                for k in sim.indices { sim[k] += cg.storage[k] }
            }
            match = LinearAssignment.maximize(sim, rows: ns, cols: nr)
            // With fewer suspect units than reference units, a forced match to an unrelated unit (a suspect unit whose
            // real counterpart is taken, as a duplicate's is) is no match: that reference unit counts as dropped. With
            // equal counts every unit keeps its match (a permutation; noise only weakens the similarities).
            if ns < nr { for i in 0..<ns { if let j = match[i], sim[i * nr + j] < 0.5 * nf { match[i] = nil } } }
        }

        func rawScale(_ i: Int, _ j: Int) -> Float {
            guard scalable else { return 1 }
            var dot = 0.0, nn = 0.0
            for k in 0..<d { dot += Double(ups.storage[i * d + k]) * Double(upr.storage[j * d + k]); nn += Double(upr.storage[j * d + k]) * Double(upr.storage[j * d + k]) }
            return fittedScale(dot: dot, referenceSquares: nn)
        }
        let layerScaled = isScaled((0..<ns).compactMap { i in match[i].map { rawScale(i, $0) } })
        func scale(_ i: Int, _ j: Int) -> Float { layerScaled ? rawScale(i, j) : 1 }

        // Where each reference unit comes from: up row ÷ c, gate row, down column × c (plus merged duplicates).
        var rowSources = [Int?](repeating: nil, count: nr), divisors = [Float](repeating: 1, count: nr)
        var columnSources = [[(column: Int, factor: Float)]](repeating: [], count: nr)
        let biass = try l.upBias.flatMap { ws.shape(suspect: $0) == [ns] ? try ws.s($0) : nil }
        var biasa = [Float](repeating: 0, count: nr)
        var moved = 0, rescaled = 0, flips = 0, duplicated = 0, extra = 0
        var ambiguous: [Int] = []
        var assigned = [Bool](repeating: false, count: nr)
        for i in 0..<ns {
            guard let j = match[i] else { continue }
            assigned[j] = true
            if i != j { moved += 1 }
            let c = scale(i, j)
            if abs(c - 1) > options.scaleTolerance { rescaled += 1; if c < 0 { flips += 1 } }
            rowSources[j] = i; divisors[j] = c
            columnSources[j] = [(i, c)]
            if let biass { biasa[j] = biass.storage[i] / c }
            if !sim.isEmpty {
                let chosen = sim[i * nr + j]
                var runnerUp = -Float.infinity
                for jj in 0..<nr where jj != j { runnerUp = max(runnerUp, sim[i * nr + jj]) }
                if chosen < 0.3 * nf || chosen - runnerUp < 0.05 * nf { ambiguous.append(j) }
            }
        }
        // Suspect units beyond the reference's count: a duplicate (same input row, output column split) is merged into
        // the unit it copies; anything else is left out.
        for i in 0..<ns where match[i] == nil {
            var best = -Float.infinity, arg = 0
            for j in 0..<nr where sim[i * nr + j] > best { best = sim[i * nr + j]; arg = j }
            guard best >= 0.6 * nf, assigned[arg] else { extra += 1; continue }
            columnSources[arg].append((i, scale(i, arg)))
            duplicated += 1
        }
        let dropped = assigned.filter { !$0 }.count
        var changed = moved > 0 || rescaled > 0 || dropped > 0 || duplicated > 0 || extra > 0 || ns != nr
        let upGather = TensorGather(shape: [nr, d], sourceColumns: d, sources: .rows(rowSources, divisors: divisors))
        let gateGather = TensorGather(shape: [nr, d], sourceColumns: d, sources: .rows(rowSources, divisors: nil))
        let downGather = TensorGather(shape: [dOut, nr], sourceColumns: ns, sources: .columns(columnSources))
        var after = before ?? 0
        var aligned: (up: Matrix, gate: Matrix?, down: Matrix)?
        if changed {
            let a = (up: upGather.applied(to: ups), gate: gates.map { gateGather.applied(to: $0) }, down: downGather.applied(to: downs))
            after = relativeResidual([(a.up, upr), (a.down, downr)] + (a.gate.map { [($0, gater!)] } ?? []))
            aligned = a
        }
        // A search result is used only when it is a confident match (mean matched similarity as high as the identity
        // check asks of an aligned copy) that fits the reference better than the suspect as stored.
        let matchedSims = (0..<ns).compactMap { i in match[i].map { sim.isEmpty ? options.identityCosine * nf : sim[i * nr + $0] } }
        let confident = !matchedSims.isEmpty && matchedSims.reduce(0, +) / Float(matchedSims.count) >= options.identityCosine * nf
        if changed && ((!identityByCheck && !confident) || (before.map { after >= $0 } ?? false)) {
            changed = false
            return GroupFinding(kind: "ffn", unit: "unit", suspectUnits: ns, referenceUnits: nr, moved: 0, rescaled: 0, signFlips: 0,
                                dropped: 0, duplicated: 0, extra: 0, ambiguous: [], ambiguousCount: 0, residualBefore: before,
                                residualAfter: before ?? after, identityByCheck: false, leftAsStored: true)
        }
        if changed, let aligned {
            ws.store(l.up, upGather, applied: aligned.up)
            ws.store(l.down, downGather, applied: aligned.down)
            if let g = l.gate, let a = aligned.gate { ws.store(g, gateGather, applied: a) }
            if let b = l.upBias, biass != nil { ws.set(b, Matrix(rows: 1, cols: nr, storage: biasa)) }
        }
        return GroupFinding(kind: "ffn", unit: "unit", suspectUnits: ns, referenceUnits: nr, moved: moved, rescaled: rescaled, signFlips: flips,
                            dropped: dropped, duplicated: duplicated, extra: extra, ambiguous: Array(ambiguous.prefix(16)),
                            ambiguousCount: ambiguous.count, residualBefore: before, residualAfter: after, identityByCheck: identityByCheck)
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

    /// sqrt(Σ‖S − R‖² / Σ‖R‖²) over same-shaped pairs.
    static func relativeResidual(_ pairs: [(Matrix, Matrix)]) -> Double {
        var num = 0.0, den = 0.0
        for (s, r) in pairs where s.count == r.count {
            for k in 0..<s.count {
                let x = Double(s.storage[k]) - Double(r.storage[k])
                num += x * x; den += Double(r.storage[k]) * Double(r.storage[k])
            }
        }
        return den > 0 ? (num / den).squareRoot() : 0
    }
}

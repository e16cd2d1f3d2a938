import Foundation
import LinearAlgebra
import TensorIO

/// What to check and how strictly.
public struct DetectOptions: Sendable {
    public var selection = TensorSelection()
    public var rank = Carriers.defaultRank
    /// Decision threshold on the rigorous p-value bound.
    public var alpha = 1e-6
    /// Tensors processed at once (each with one BLAS thread).
    public var workers = Parallel.defaultWorkers
    /// Check only this part of the selection (for runs spread over machines, merged by `combine`). Format v1 only:
    /// with a part, `.auto` looks for v1 alone.
    public var part: ReportPart?
    /// Which formats to look for: both by default (the bound pays a factor 2).
    public var format = MarkVersionSearch.auto
    /// Format v2: read the model as stored transposed, as when its pilots prefer that by 3 (docs/FORMAT.md, step 4).
    /// `scan` also tries this on samples too small for their pilots to decide, and pays for the extra test.
    public var readTransposed = false
    public init() {}
}

/// Which mark formats `detect` looks for.
public enum MarkVersionSearch: String, Sendable, Codable, CaseIterable {
    /// Both v1 and v2; the verdict uses the stronger, and its bound is doubled.
    case auto, v1, v2
}

/// Correlates a suspect's weights with the keyed pattern (docs/FORMAT.md).
public enum Detector {
    /// Evidence from one m×n suspect matrix held in memory (tests, benchmarks): the streaming path below, reading
    /// the arrays as row blocks.
    public static func score(name: String, suspect: [Float], reference: [Float]?, rows: Int, cols: Int,
                                carriers: Carriers) throws -> TensorScore {
        precondition(reference == nil || reference!.count == suspect.count, "reference and suspect sizes differ")
        let s = InMemoryTensors(path: "memory", tensors: [(name, [rows, cols], suspect)])
        let r = reference.map { InMemoryTensors(path: "memory", tensors: [(name, [rows, cols], $0)]) }
        return try score(name: name, rows: rows, cols: cols, suspect: s, reference: r, carriers: carriers)
    }

    /// Format-v1 evidence from one m×n tensor streamed in row blocks: Y = Σ_blocks A_blockᵀ (X_block B), with no
    /// full-size float copy of the tensor.
    ///
    /// Blind: X = suspect. Informed: X = suspect − reference with erasures masked (`Residual`). Blind detection of
    /// bf16/f32 storage reads X_block in place (the rank-32 kernel widens bf16 in L1-sized chunks); other storage,
    /// and informed mode, decode X_block into a small reusable buffer first.
    static func score(name: String, rows m: Int, cols n: Int, suspect: any RowBlockDecodable,
                         reference: (any RowBlockDecodable)?, carriers: Carriers) throws -> TensorScore {
        let a = carriers.a.cols, b = carriers.b.cols
        let blockRows = max(8, min(m, (1 << 18) / max(1, n)))
        var x: [Float] = []
        var r: [Float] = []
        var z = [Float](repeating: 0, count: blockRows * b)
        var y = [Float](repeating: 0, count: a * b)
        var erased = 0
        // First pass as fast as the storage allows; if a NaN/±Inf made Y non-finite, a second pass decodes every
        // block and counts each non-finite value of X as erased (it carries no evidence either way).
        var sanitize = false
        while true {
        var start = 0
        while start < m {
            let end = min(m, start + blockRows), k = end - start
            try z.withUnsafeMutableBufferPointer { zs in
                // X_block B, in place when the rows are stored as bf16/f32 and nothing is subtracted.
                if reference == nil, !sanitize, b == RankProjection.columns,
                   try suspect.withStoredRows(named: name, rows: start..<end, { raw, dtype in
                       RankProjection.project(stored: raw, dtype: dtype, rows: k, cols: n, b: carriers.b, into: zs.baseAddress!)
                   }) == true {
                    return
                }
                if x.isEmpty { x = [Float](repeating: 0, count: blockRows * n) }
                try x.withUnsafeMutableBufferPointer { xs in
                    try suspect.decodeRows(named: name, rows: start..<end, into: UnsafeMutableBufferPointer(rebasing: xs[0..<(k * n)]))
                    if let reference {
                        if r.isEmpty { r = [Float](repeating: 0, count: blockRows * n) }
                        try r.withUnsafeMutableBufferPointer { rs in
                            try reference.decodeRows(named: name, rows: start..<end, into: UnsafeMutableBufferPointer(rebasing: rs[0..<(k * n)]))
                            erased += Residual.subtract(count: k * n, reference: { rs[$0] }, from: xs)
                        }
                    }
                    if sanitize { erased += Residual.clearNonFinite(UnsafeMutableBufferPointer(rebasing: xs[0..<(k * n)])) }
                    RankProjection.project(UnsafeBufferPointer(xs), rows: k, cols: n, b: carriers.b, into: zs.baseAddress!)
                }
            }
            carriers.a.storage.withUnsafeBufferPointer { asb in
                z.withUnsafeBufferPointer { zs in
                    y.withUnsafeMutableBufferPointer { ys in
                        BLAS.gemm(m: a, n: b, k: k, a: asb.baseAddress! + start * a, lda: a, transA: .transposed,
                                  b: zs.baseAddress!, ldb: b, beta: 1, c: ys.baseAddress!, ldc: b)
                    }
                }
            }
            start = end
        }
        let correlation = BLAS.dot(y, carriers.s.storage), norm = Double(BLAS.nrm2(y))
        let finite = correlation.isFinite && norm.isFinite
        if sanitize || finite {
            // Finite values so large that the projection overflows: no usable evidence, z = 0 (conservative:
            // the tensor's weight still counts in the combination).
            return TensorScore(name: name, shape: [m, n], weight: Double(m * n).squareRoot(),
                                  correlation: finite ? correlation : 0, norm: finite ? norm : 0, erased: erased)
        }
        sanitize = true
        erased = 0
        for i in y.indices { y[i] = 0 }
        }
    }

    /// Detects the mark of `key` in `suspect` (safetensors or GGUF), blind or (with `reference`) informed.
    ///
    /// Selection is re-derived from the suspect's names and shapes. In informed mode a selected tensor
    /// missing from the reference, or shaped differently there, is skipped and reported; so is every
    /// tensor of `expected` (e.g. from a manifest) that the suspect lacks or has reshaped.
    public static func detect(suspect: any TensorSource, reference: (any TensorSource)?, key: WatermarkKey,
                              options: DetectOptions, expected: [(name: String, shape: [Int])] = [],
                              progress: @escaping (String, Int, Int) -> Void = { _, _, _ in }) throws -> DetectionReport {
        var report = try detectAnyFormat(suspect: suspect, reference: reference, key: key, options: options, expected: expected, progress: progress)
        report.applyCoverage(ReadCoverage.of(suspect, selection: options.selection))
        return report
    }

    static func detectAnyFormat(suspect: any TensorSource, reference: (any TensorSource)?, key: WatermarkKey,
                                options: DetectOptions, expected: [(name: String, shape: [Int])],
                                progress: @escaping (String, Int, Int) -> Void) throws -> DetectionReport {
        switch options.format {
        case .v1:
            return try detectV1(suspect: suspect, reference: reference, key: key, options: options, expected: expected, formatsTried: 1, progress: progress)
        case .v2:
            return try detectV2(suspect: suspect, reference: reference, key: key, options: options, formatsTried: 1, progress: progress)
        case .auto where options.part != nil:
            // Parts merge exactly only in format v1 (v2 pools matrices by tile position).
            return try detectV1(suspect: suspect, reference: reference, key: key, options: options, expected: expected, formatsTried: 1, progress: progress)
        case .auto:
            let v2 = try detectV2(suspect: suspect, reference: reference, key: key, options: options, formatsTried: 2, progress: progress)
            // Detected as v2 with the factor 2 paid: looking for v1 too could not change the verdict
            // (P(either ≥ threshold) ≤ 2·exp(−z²/2) whichever is looked at), so it is skipped.
            if v2.detected { return v2 }
            let v1 = try detectV1(suspect: suspect, reference: reference, key: key, options: options, expected: expected, formatsTried: 2, progress: progress)
            return v2.combinedZ >= v1.combinedZ || v1.tensors.isEmpty ? v2 : v1
        }
    }

    /// Format v2 detection of `key` read both ways scan's sample is read: with the default orientation the pilots
    /// choose, then with transposition forced (a sample's pilots may be too few to tell a copy stored transposed).
    /// One projection and one pilot pass serve both; each report is the one `detect` gives with
    /// `options.format = .v2` and `options.readTransposed` false or true, to the last bit.
    public static func detectV2BothOrientations(suspect: any TensorSource, key: WatermarkKey, options: DetectOptions,
                                                progress: @escaping (String, Int, Int) -> Void = { _, _, _ in })
        throws -> (chosen: DetectionReport, transposed: DetectionReport) {
        let outcomes = try TileDetector.detect(suspect: suspect, reference: nil, secret: key.secret, options: options,
                                               readTransposed: [false, true], progress: progress)
        let coverage = ReadCoverage.of(suspect, selection: options.selection)
        var reports = outcomes.map { v2Report($0, suspect: suspect, reference: nil, key: key, options: options, formatsTried: 1) }
        for i in reports.indices { reports[i].applyCoverage(coverage) }
        return (reports[0], reports[1])
    }

    /// Format v2 (name-free) detection as a report.
    static func detectV2(suspect: any TensorSource, reference: (any TensorSource)?, key: WatermarkKey, options: DetectOptions,
                         formatsTried: Int, progress: @escaping (String, Int, Int) -> Void) throws -> DetectionReport {
        let outcome = try TileDetector.detect(suspect: suspect, reference: reference, secret: key.secret, options: options, progress: progress)
        return v2Report(outcome, suspect: suspect, reference: reference, key: key, options: options, formatsTried: formatsTried)
    }

    static func v2Report(_ outcome: TileDetector.Outcome, suspect: any TensorSource, reference: (any TensorSource)?, key: WatermarkKey,
                         options: DetectOptions, formatsTried: Int) -> DetectionReport {
        let selected = suspect.sourceTensors.filter { options.selection.selectsGeometry($0) }
        return DetectionReport(keyId: key.id, suspect: suspect.path, reference: reference?.path,
                               mode: reference == nil ? .blind : .informed, alpha: options.alpha,
                               tensors: outcome.tensors, skipped: outcome.skipped, rank: TileCarriers.rank, selection: options.selection,
                               selectedTensors: selected.map { SelectedTensor(name: $0.name, shape: $0.shape) },
                               format: .v2, pooledZ: outcome.combinedZ, formatsTried: formatsTried,
                               tileStatistics: TileStatistics(pilotPositions: outcome.pilotPositions, scoredPositions: outcome.scoredPositions,
                                                              hypothesesPerGroup: outcome.hypothesesTried))
    }

    /// Format v1 (name-keyed) detection.
    static func detectV1(suspect: any TensorSource, reference: (any TensorSource)?, key: WatermarkKey,
                         options: DetectOptions, expected: [(name: String, shape: [Int])], formatsTried: Int,
                         progress: @escaping (String, Int, Int) -> Void) throws -> DetectionReport {
        var skipped: [SkippedTensor] = []
        let selectedAll = suspect.sourceTensors.filter { options.selection.selects($0) }
        // Part k of N: every N-th tensor of the selection in name order. Tensors absent from the suspect are
        // reported by part 0 only, so the parts together account for everything exactly once.
        let partOrder = Dictionary(selectedAll.map(\.name).sorted().enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        let firstPart = options.part.map { $0.index == 0 } ?? true
        func inPart(_ name: String) -> Bool {
            guard let part = options.part else { return true }
            return (partOrder[name] ?? 0) % part.count == part.index
        }
        for e in expected where firstPart {
            guard let t = suspect.sourceTensor(named: e.name) else {
                skipped.append(.init(name: e.name, reason: "missing from the suspect"))
                continue
            }
            if t.shape != e.shape {
                skipped.append(.init(name: e.name, reason: "reshaped in the suspect: \(t.shape) instead of \(e.shape)"))
            }
        }
        let selected = selectedAll.filter { inPart($0.name) }
        // A tensor the selection would take were it decodable (e.g. a ggml type this version does not know)
        // is reported as skipped, never dropped in silence.
        for t in suspect.sourceTensors where !t.isFloating && inPart(t.name) && options.selection.selects(name: t.name, shape: t.shape, isFloating: true) {
            skipped.append(.init(name: t.name, reason: "stored as \(t.storage), which this version of WeightMark cannot decode"))
        }
        if let reference, firstPart {
            for t in reference.sourceTensors where options.selection.selects(t) {
                if suspect.sourceTensor(named: t.name) == nil, !skipped.contains(where: { $0.name == t.name }) {
                    skipped.append(.init(name: t.name, reason: "missing from the suspect"))
                }
            }
        }
        // Reference checks first (cheap, sequential), then the heavy work in parallel.
        var work: [(tensor: SourceTensor, reference: SourceTensor?)] = []
        for t in selected {
            guard let reference else { work.append((t, nil)); continue }
            guard let r = reference.sourceTensor(named: t.name) else {
                skipped.append(.init(name: t.name, reason: "not in the reference"))
                continue
            }
            guard r.shape == t.shape, r.isFloating else {
                skipped.append(.init(name: t.name, reason: "shape \(t.shape) in the suspect but \(r.shape) in the reference"))
                continue
            }
            work.append((t, r))
        }
        let done = Locked(0)
        let total = work.count
        progress("", 0, total)
        let collected = try Parallel.withSingleThreadedBLAS {
            try Parallel.map(count: work.count, workers: options.workers) { i -> TensorScore in
                let (t, r) = work[i]
                let carriers = try Carriers.derive(secret: key.secret, tensor: t.name, rows: t.shape[0], cols: t.shape[1], rank: options.rank)
                // One row-block view per task: GGUF and other whole-tensor sources are decoded once per tensor.
                let e = try score(name: t.name, rows: t.shape[0], cols: t.shape[1], suspect: DecodedRows.rowBlocks(of: suspect),
                                     reference: reference.map { DecodedRows.rowBlocks(of: $0) }, carriers: carriers)
                suspect.releaseTensor(named: t.name)
                if let r { reference?.releaseTensor(named: r.name) }
                done.withLock { $0 += 1; progress(t.name, $0, total) }
                return e
            }
        }
        return DetectionReport(keyId: key.id, suspect: suspect.path, reference: reference?.path,
                               mode: reference == nil ? .blind : .informed, alpha: options.alpha,
                               tensors: collected, skipped: skipped, rank: options.rank, selection: options.selection,
                               selectedTensors: selectedAll.map { SelectedTensor(name: $0.name, shape: $0.shape) },
                               part: options.part, format: .v1, formatsTried: formatsTried)
    }
}

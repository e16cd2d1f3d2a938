import Crypto
import CKernels
import CTensorIOKernels
import Foundation
import LinearAlgebra
import TensorIO

/// How the mark is spread over a tensor's elements.
public enum WatermarkShaping: String, Sendable, Codable, CaseIterable {
    /// `ΔW = β · A S Bᵀ`: a pure rank-a update.
    case uniform
    /// `ΔW = β · (|W|/rms W) ⊙ (A S Bᵀ)`: rides on large weights; exact zeros stay zero.
    case magnitude
}

/// How strong the mark is.
public enum WatermarkStrength: Sendable, Equatable {
    /// Per-tensor relative distortion δ = ‖ΔW‖/‖W‖.
    case relativeDistortion(Double)
    /// The δ that makes the expected blind Z of the unattacked model equal this value.
    case targetZ(Double)
}

/// What to mark and how.
public struct EmbedOptions: Sendable {
    public var shaping: WatermarkShaping = .uniform
    public var strength: WatermarkStrength = .targetZ(20)
    public var selection = TensorSelection()
    public var rank = Carriers.defaultRank
    /// δ never exceeds this (below int8 rounding: the fidelity budget in README.md); a warning says when it binds.
    public var maximumDistortion = 5e-3
    /// Tensors marked at once, ahead of the writer (each with one BLAS thread).
    public var workers = Parallel.defaultWorkers
    /// Marked tensors waiting for the writer take at most this much memory (but at least `workers + 1` of
    /// them may wait), so the workers run on while the writer hashes and writes a large one.
    public var aheadBytes = 256 << 20
    /// Also record each input file's SHA-256 in the manifest (one more pass over the model: SHA-256 runs at
    /// ~1.2 GB/s per core, a third of embed's CPU time on a bf16 model). Output files are always hashed.
    public var hashInputs = false
    /// Leave the folder's other weight files (`pytorch_model.bin`, `tf_model.h5`, a second `.safetensors`, …) out of
    /// the output instead of refusing to embed: copied, they would ship unmarked.
    public var dropUnmarkedWeights = false
    /// Format of the mark (v2 unless an older tool must read it).
    public var format = MarkVersion.v2
    /// A per-copy signal on top of the owner mark (a recipient's fingerprint, `RecipientFingerprint`); uniform
    /// shaping, format v2 only. The owner mark then gets sqrt(1 − f²)·δ and the signal f·δ (f = its share).
    public var copySignal: (any CopySignal)?

    public init() {}
}

/// The embedding plan: one δ for every selected tensor, and what blind Z to expect without attack.
public struct EmbedPlan: Sendable {
    public struct Entry: Sendable {
        public var tensor: ModelTensor
        /// Fixed detection weight sqrt(m·n).
        public var weight: Double
        /// Expected blind z per unit δ.
        public var efficiency: Double
    }
    public var entries: [Entry]
    public var delta: Double
    public var expectedBlindZ: Double
    /// True when the target Z needed a δ above the cap (δ was capped).
    public var capped: Bool
    public var requestedDelta: Double
}

/// Embeds the keyed mark into weight matrices (docs/FORMAT.md).
public enum Embedder {
    /// Plans δ for `model`.
    ///
    /// Expected blind z of one tensor: with Y = Aᵀ W' B and A, B independent of W, E‖AᵀWB‖² = (ab/mn)‖W‖², so
    /// z_t ≈ ⟨ΔW, ASBᵀ⟩ / (‖W‖ sqrt(ab/mn)) = δ · sqrt(mn/ab) · ⟨H⊙P, P⟩/‖H⊙P‖ with P = ASBᵀ.
    /// For uniform shaping the last factor is sqrt(ab), giving z_t = δ sqrt(mn). For magnitude shaping, P
    /// being independent of H, it is ≈ sqrt(ab) · mean|W| / rms(W), which needs one decoding pass.
    public static func plan(_ model: SafetensorsModel, options: EmbedOptions) throws -> EmbedPlan {
        var entries: [EmbedPlan.Entry] = []
        for t in model.tensors where options.selection.selects(name: t.name, dtype: t.dtype, shape: t.shape) {
            let mn = Double(t.shape[0] * t.shape[1])
            var efficiency = mn.squareRoot()
            if options.shaping == .magnitude {
                let stats = TensorStatistics(try model.floats(of: t))
                model.release(t)
                efficiency *= stats.rms > 0 ? stats.meanAbs / stats.rms : 0
            }
            entries.append(.init(tensor: t, weight: mn.squareRoot(), efficiency: efficiency))
        }
        guard !entries.isEmpty else {
            throw WatermarkError.nothingSelected(path: model.path, reason: "no 2-D float tensor with at least \(options.selection.minimumElements) elements (use --include to select tensors by name)")
        }
        let weightNorm = entries.reduce(0) { $0 + $1.weight * $1.weight }.squareRoot()
        // Format v2 scores 7 tile positions in 8 (the eighth chooses how to read the suspect): Z scales by sqrt(7/8).
        let scored = options.format == .v2 ? (7.0 / 8).squareRoot() : 1
        let zPerDelta = scored * entries.reduce(0) { $0 + $1.weight * $1.efficiency } / weightNorm
        let requested: Double
        switch options.strength {
        case let .relativeDistortion(d): requested = d
        case let .targetZ(z): requested = z / zPerDelta
        }
        // Half-precision outputs are rounded stochastically, which adds its own noise to the stored change (variance
        // about |ΔW|·step per weight): the intended δ keeps 15% of the budget free so that the distortion measured
        // after rounding stays within the cap too (bf16 MiniLM: 4.8e-3 measured at δ 4.25e-3; 5.05e-3 at 4.49e-3).
        let halfPrecision = entries.contains { $0.tensor.dtype == .bf16 || $0.tensor.dtype == .f16 }
        let cap = halfPrecision ? 0.85 * options.maximumDistortion : options.maximumDistortion
        let delta = min(requested, cap)
        return EmbedPlan(entries: entries, delta: delta, expectedBlindZ: delta * zPerDelta,
                         capped: requested > cap, requestedDelta: requested)
    }

    /// Adds the format-v1 mark to an m×n matrix in place (in memory: attacks that re-mark, tests, benchmarks).
    /// - Returns: β, the scale applied to the (shaped) pattern.
    /// - Throws: `WatermarkError.unmarkableTensor` when no finite value is non-zero.
    @discardableResult
    public static func mark(_ w: inout Matrix, carriers: Carriers, shaping: WatermarkShaping, delta: Double) throws -> Double {
        try mark(&w, with: .v1(carriers), shaping: shaping, delta: delta)
    }

    /// Adds the format-v2 mark of `tiles` to an m×n matrix in place.
    /// - Returns: β.
    @discardableResult
    public static func mark(_ w: inout Matrix, tiles: TileCarriers, shaping: WatermarkShaping, delta: Double) throws -> Double {
        try mark(&w, with: .v2(tiles), shaping: shaping, delta: delta)
    }

    /// An in-memory matrix is one more row-block source: it goes through `mark(tensor:…)`, the code `embed` runs.
    static func mark(_ w: inout Matrix, with carriers: MarkCarriers, shaping: WatermarkShaping, delta: Double) throws -> Double {
        let source = InMemoryTensors(path: "memory", tensors: [("matrix", [w.rows, w.cols], w.storage)])
        var random = SplitMix64(seed: 0) // f32 output is stored exactly: the rounding stream is never drawn from
        var marked = [Float](repeating: 0, count: w.count)
        let r = try marked.withUnsafeMutableBytes { out in
            try mark(tensor: "matrix", of: source, rows: w.rows, cols: w.cols, dtype: .f32, carriers: carriers,
                     shaping: shaping, delta: delta, random: &random, into: out)
        }
        w.storage = marked
        return r.beta
    }

    /// Marks one m×n tensor of `source` streaming it in row blocks, and encodes the result as `dtype` into `o`
    /// (one output of `mark(tensor:…outputs:)`).
    static func mark(tensor name: String, of source: any RowBlockDecodable, rows m: Int, cols n: Int, dtype: DType,
                     carriers: MarkCarriers, shaping: WatermarkShaping, delta: Double,
                     random: inout SplitMix64, into o: UnsafeMutableRawBufferPointer,
                     signal: (any CopySignal)? = nil, signalDelta: Double = 0) throws -> (beta: Double, measuredDelta: Double, nonFinite: Int) {
        var outputs = [MarkedOutput(signal: signal, random: random, bytes: o)]
        let r = try mark(tensor: name, of: source, rows: m, cols: n, dtype: dtype, carriers: carriers, shaping: shaping,
                         delta: delta, signalDelta: signalDelta, outputs: &outputs)
        random = outputs[0].random
        return (r.beta, r.measuredDeltas[0], r.nonFinite)
    }

    /// One output of a marking pass: the per-copy signal it carries (none: the owner mark alone), its own rounding
    /// stream, and the bytes it is encoded into.
    struct MarkedOutput {
        var signal: (any CopySignal)?
        var random: SplitMix64
        var bytes: UnsafeMutableRawBufferPointer
    }

    /// Marks one m×n tensor of `source` streaming it in row blocks, and encodes one marked copy per output.
    ///
    /// Only the encoded outputs are materialized; the weights and the pattern pass through L2-sized buffers:
    /// pass 1 accumulates ‖W‖² (and, for magnitude shaping, ‖|W| ⊙ P‖²); pass 2 decodes each block again,
    /// derives P_block = (A_block S) Bᵀ once, and for each output adds β·(H ⊙ (P_block + its signal)), encodes
    /// (stochastically for f16/bf16, with that output's stream) and measures the stored distortion. For uniform
    /// shaping ‖P‖ = ‖S‖_F = sqrt(a·b) because A and B are orthonormal. Each output gets exactly the bytes a pass
    /// with that output alone would write: the signal is added to a copy of the same pattern block, and the
    /// streams are independent.
    /// - Returns: β, the measured ‖stored − W‖/‖W‖ of each output, and how many NaN/±Inf values were left unmarked.
    /// - Throws: `WatermarkError.unmarkableTensor` when no finite value is non-zero (β would be 0).
    static func mark(tensor name: String, of source: any RowBlockDecodable, rows m: Int, cols n: Int, dtype: DType,
                     carriers: MarkCarriers, shaping: WatermarkShaping, delta: Double, signalDelta: Double,
                     outputs: inout [MarkedOutput]) throws -> (beta: Double, measuredDeltas: [Double], nonFinite: Int) {
        // L2-sized row blocks (weights, pattern and output of a block stay in cache through the fused pass).
        let blockRows = max(8, min(m, (1 << 16) / max(1, n)))
        var w = [Float](repeating: 0, count: blockRows * n)
        var p = [Float](repeating: 0, count: blockRows * n)
        let pattern: (Range<Int>) -> Void
        let uniformPatternNorm: Double
        switch carriers {
        case let .v1(carriers):
            let rb = carriers.b.cols
            uniformPatternNorm = Double(carriers.a.cols * rb).squareRoot()
            let aS = BLAS.matmul(carriers.a, carriers.s) // m×b
            // Bᵀ in 32×32 panels for the rank-32 pattern kernel.
            let bt = rb == RankProjection.columns ? RankProjection.packForPattern(carriers.b) : nil
            pattern = { rows in
                let k = rows.count
                // P_block = (A S)[rows] · Bᵀ
                aS.storage.withUnsafeBufferPointer { src in
                    p.withUnsafeMutableBufferPointer { out in
                        if let bt {
                            bt.withUnsafeBufferPointer { b in
                                weightmark_pattern32(RankProjection.level, src.baseAddress! + rows.lowerBound * rb, k, b.baseAddress, n, out.baseAddress)
                            }
                        } else {
                            carriers.b.storage.withUnsafeBufferPointer { b in
                                BLAS.gemm(m: k, n: n, k: rb, a: src.baseAddress! + rows.lowerBound * rb, lda: rb, b: b.baseAddress!, ldb: rb,
                                          transB: .transposed, c: out.baseAddress!, ldc: n)
                            }
                        }
                    }
                }
            }
        case let .v2(tiles):
            uniformPatternNorm = tiles.patternEnergy(rows: m, cols: n).squareRoot()
            // Each tile's S and U_r·S are derived once per tile row, however many blocks the tile row spans.
            var rowsOfPattern = TilePatternRows(tiles: tiles, rows: m, cols: n)
            pattern = { rows in
                p.withUnsafeMutableBufferPointer { out in rowsOfPattern.fill(rows: rows, into: out.baseAddress!) }
            }
        }
        func decode(_ rows: Range<Int>) throws {
            try w.withUnsafeMutableBufferPointer { buf in
                try source.decodeRows(named: name, rows: rows, into: UnsafeMutableBufferPointer(rebasing: buf[0..<(rows.count * n)]))
            }
        }
        // Pass 1. Uniform bf16 needs only ‖W‖², summed from the stored rows in place.
        var w2 = 0.0, hp2 = 0.0
        var start = 0
        if shaping == .uniform, dtype == .bf16, try source.withStoredRows(named: name, rows: 0..<m, { raw, _ in
            weightmark_bf16_sum_squares(RankProjection.level, raw.baseAddress!.assumingMemoryBound(to: UInt16.self), m * n, &w2)
        }) != nil {
            start = m
        }
        // NaN and ±Inf cannot carry a mark: they are left as they are, kept out of ‖W‖ (which would otherwise be
        // non-finite and make β zero, leaving the whole matrix unmarked) and counted in the manifest.
        var nonFinite = 0
        if !w2.isFinite { w2 = 0; start = 0 }
        func dot(_ count: Int) -> Double {
            w.withUnsafeBufferPointer { ws in BLAS.dot(UnsafeBufferPointer(rebasing: ws[0..<count]), UnsafeBufferPointer(rebasing: ws[0..<count])) }
        }
        while start < m {
            let end = min(m, start + blockRows), count = (end - start) * n
            try decode(start..<end)
            var s = dot(count)
            if !s.isFinite {
                for i in 0..<count where !w[i].isFinite { w[i] = 0; nonFinite += 1 }
                s = dot(count)
            }
            w2 += s
            if shaping == .magnitude {
                pattern(start..<end)
                hp2 += Self.sumOfSquares(count) { abs(w[$0]) * p[$0] }
            }
            start = end
        }
        guard w2 > 0, w2.isFinite else {
            throw WatermarkError.unmarkableTensor(path: source.path, tensor: name, reason: nonFinite == m * n
                ? "every value is NaN or infinite" : nonFinite > 0 ? "every finite value is zero (\(nonFinite) NaN or infinite)" : "every value is zero")
        }
        let norm = w2.squareRoot()
        let rms = Float((w2 / Double(m * n - nonFinite)).squareRoot())
        let patternNorm = shaping == .uniform ? uniformPatternNorm : (rms > 0 ? hp2.squareRoot() / Double(rms) : 0)
        let beta = norm > 0 && patternNorm > 0 ? delta * norm / patternNorm : 0
        // A per-copy signal (±1 per weight) rides on the pattern: W + β(P + (β_f/β)F) = W + βP + β_f F, with
        // β_f = δ_f‖W‖/sqrt(#finite weights) so that ‖β_f F‖ = δ_f‖W‖.
        let signalScale = outputs.contains(where: { $0.signal != nil }) && beta > 0 ? Float(signalDelta * norm / Double(m * n - nonFinite).squareRoot() / beta) : 0
        // Pass 2. bf16 rows read in place go through one fused C pass (add, stochastic rounding, distortion);
        // other dtypes decode, add, encode and decode back. With several outputs the pattern block is derived once
        // and each output's signal is added to a copy of it.
        let width = dtype.bitCount / 8
        var marked: [Float] = []
        var stored: [Float] = []
        var withSignal: [Float] = []
        var diff2 = [Double](repeating: 0, count: outputs.count)
        let b = Float(beta)
        let magnitudeScale: Float = shaping == .magnitude ? (rms > 0 ? 1 / rms : 0) : 0
        for output in outputs { precondition(output.bytes.count == m * n * width) }
        let fused = dtype == .bf16 && (shaping == .uniform || magnitudeScale > 0) && nonFinite == 0
        start = 0
        while start < m {
            let end = min(m, start + blockRows), count = (end - start) * n
            pattern(start..<end)
            var decoded = false
            for k in outputs.indices {
                let dst = UnsafeMutableRawBufferPointer(rebasing: outputs[k].bytes[(start * n * width)..<(end * n * width)])
                // The pattern block plus this output's signal: in place when it is the only output.
                if let signal = outputs[k].signal {
                    if outputs.count == 1 {
                        p.withUnsafeMutableBufferPointer { signal.add(rows: start..<end, cols: n, scale: signalScale, into: $0.baseAddress!) }
                    } else {
                        if withSignal.isEmpty { withSignal = [Float](repeating: 0, count: blockRows * n) }
                        withSignal.withUnsafeMutableBufferPointer { q in
                            p.withUnsafeBufferPointer { q.baseAddress!.update(from: $0.baseAddress!, count: count) }
                            signal.add(rows: start..<end, cols: n, scale: signalScale, into: q.baseAddress!)
                        }
                    }
                }
                let useCopy = outputs[k].signal != nil && outputs.count > 1
                if fused, try source.withStoredRows(named: name, rows: start..<end, { raw, _ in
                    (useCopy ? withSignal : p).withUnsafeBufferPointer { ps in
                        weightmark_mark_bf16(RankProjection.level, raw.baseAddress!.assumingMemoryBound(to: UInt16.self), ps.baseAddress,
                                             b, magnitudeScale, count, dst.baseAddress!.assumingMemoryBound(to: UInt16.self),
                                             &outputs[k].random.state, &diff2[k])
                    }
                }) != nil {
                    continue
                }
                if marked.isEmpty {
                    marked = [Float](repeating: 0, count: blockRows * n)
                    stored = [Float](repeating: 0, count: blockRows * n)
                }
                if !decoded {
                    try decode(start..<end)
                    decoded = true
                }
                let q = useCopy ? withSignal : p
                if shaping == .magnitude {
                    for i in 0..<count { marked[i] = w[i] + b * (abs(w[i]) * magnitudeScale) * q[i] }
                } else {
                    for i in 0..<count { marked[i] = w[i] + b * q[i] }
                }
                if nonFinite > 0 {
                    for i in 0..<count where !w[i].isFinite { marked[i] = w[i] }
                }
                marked.withUnsafeBufferPointer { ms in
                    let values = UnsafeBufferPointer(rebasing: ms[0..<count])
                    if dtype == .bf16 {
                        FloatConversion.encodeBF16Stochastically(values, into: dst, splitMixState: &outputs[k].random.state)
                    } else {
                        FloatConversion.encodeStochastically(values, as: dtype, into: dst, using: &outputs[k].random)
                    }
                }
                stored.withUnsafeMutableBufferPointer { ss in
                    FloatConversion.decode(UnsafeRawBufferPointer(dst), dtype: dtype, into: UnsafeMutableBufferPointer(rebasing: ss[0..<count]))
                }
                diff2[k] += nonFinite == 0 ? Self.sumOfSquares(count) { stored[$0] - w[$0] }
                                           : Self.sumOfSquares(count) { w[$0].isFinite ? stored[$0] - w[$0] : 0 }
            }
            start = end
        }
        return (beta, diff2.map { $0.squareRoot() / norm }, nonFinite)
    }

    /// Σ f(i)² for i in 0..<count, with Float partial sums over 4,096-element runs accumulated in Double.
    @inline(__always)
    static func sumOfSquares(_ count: Int, _ f: (Int) -> Float) -> Double {
        var total = 0.0
        var start = 0
        while start < count {
            let end = min(count, start + 4096)
            var s: Float = 0
            for i in start..<end { let v = f(i); s += v * v }
            total += Double(s)
            start = end
        }
        return total
    }

    /// Marks `model` and writes the result to `destination` in the same layout and dtypes.
    /// - Parameter progress: called as each marked tensor is handed to the writer, with the tensor and the running count.
    /// - Returns: the manifest (without file hashes; the caller adds them).
    public static func embed(_ model: SafetensorsModel, key: WatermarkKey, options: EmbedOptions, plan: EmbedPlan,
                             to destination: String, overwrite: Bool,
                             progress: @escaping @Sendable (ModelTensor, Int) -> Void = { _, _ in }) throws -> EmbedManifest {
        try embed(model, key: key, options: options, plan: plan,
                  copies: [EmbedCopy(signal: options.copySignal, destination: destination)], overwrite: overwrite) { _, t, done in
            progress(t, done)
        }[0]
    }

    /// Marks `model` once for several copies that differ only by their per-copy signal (personal copies), reading the
    /// original once: each tensor's owner mark is derived once and every copy's signal is added to it
    /// (`mark(tensor:…outputs:)`). Each copy gets exactly the bytes `embed(…to:…)` with that signal alone writes.
    ///
    /// The copies are written side by side, one writer thread each, so marked tensors waiting for the writers take
    /// `copies.count` times the memory of one embed (at least `workers + 1` tensors of every copy may wait):
    /// callers with many copies pass them in groups.
    /// - Parameters:
    ///   - options: as for one copy; `options.copySignal` is ignored (each copy brings its own).
    ///   - progress: called as each marked tensor is handed to a copy's writer: the copy's index, the tensor, and
    ///     how many tensors that copy has received.
    /// - Returns: one manifest per copy, in the order of `copies`.
    public static func embed(_ model: SafetensorsModel, key: WatermarkKey, options: EmbedOptions, plan: EmbedPlan,
                             copies: [EmbedCopy], overwrite: Bool,
                             progress: @escaping @Sendable (Int, ModelTensor, Int) -> Void = { _, _, _ in }) throws -> [EmbedManifest] {
        precondition(!copies.isEmpty, "at least one copy")
        // Weights in another file of the folder would be copied unmarked: a leak of that file could not be traced.
        let otherWeights = model.auxiliaryWeightFiles
        if !otherWeights.isEmpty && !options.dropUnmarkedWeights {
            throw WatermarkError.unmarkedWeightFiles(path: model.path, files: otherWeights)
        }
        let auxiliary = model.auxiliaryFiles.filter { !otherWeights.contains($0) }
        let selected = Dictionary(uniqueKeysWithValues: plan.entries.map { ($0.tensor.name, $0) })
        // Marked tensors are computed ahead of the writers, `workers` at a time, in the order they ask for them.
        let order = ModelWriter.productionOrder(of: model).filter { selected[$0.name] != nil }
        let position = Dictionary(uniqueKeysWithValues: order.enumerated().map { ($1.name, $0) })
        struct Marked { var bytes: [PooledBytes]; var records: [EmbedManifest.TensorRecord] }
        let copyCount = copies.count
        // Output buffers are reused (idle ones up to the same budget as the results waiting for the writers).
        let buffers = ByteBufferPool(keepBytes: options.aheadBytes)
        let previousThreads = BLASInfo.current.threadCount
        BLASInfo.setThreadCount(1)
        defer { if let previousThreads { BLASInfo.setThreadCount(previousThreads) } }
        let outputBytes = order.map { $0.descriptor.byteCount * copyCount }
        let tiles = options.format == .v2 ? try TileCarriers(secret: key.secret) : nil
        let signals = copies.map(\.signal)
        precondition(signals.allSatisfy { $0 == nil } || (options.shaping == .uniform && options.format == .v2),
                     "a per-copy signal needs uniform shaping and format v2")
        let shares = Set(signals.map { $0?.share ?? 0 })
        precondition(shares.count == 1, "copies marked in one pass share the owner mark, so their signals have one share")
        let share = shares.first!
        let ownerDelta = plan.delta * (1 - share * share).squareRoot()
        let prefetcher = OrderedPrefetcher<Marked>(count: order.count, concurrency: options.workers,
                                                   minimumAhead: options.workers + 1, budget: options.aheadBytes,
                                                   cost: { outputBytes[$0] }, consumers: copyCount) { i in
            let t = order[i]
            let (m, n) = (t.shape[0], t.shape[1])
            let carriers: MarkCarriers = if let tiles { .v2(tiles) } else {
                .v1(try Carriers.derive(secret: key.secret, tensor: t.name, rows: m, cols: n, rank: options.rank))
            }
            // Half-precision outputs are rounded stochastically (keyed, deterministic stream), so marks far below
            // half a bf16 step survive in expectation instead of being rounded back onto the original grid.
            let seedBytes = KeyedGenerator.subkey(secret: key.secret, info: KeyedGenerator.info(purpose: "rounding", tensor: t.name, shape: t.shape))
            let rng = SplitMix64(seed: seedBytes.prefix(8).reduce(0) { $0 << 8 | UInt64($1) })
            // Placed where the tensor's data starts within a page of the output file (as in the input, whose
            // layout the output keeps), so the writer can write the pages in place; a wrong guess only costs a copy.
            let lead = model.shards[t.shard].fileRange(of: t.descriptor).lowerBound % PlacedBytes.alignment
            let bytes = signals.map { _ in buffers.take(t.descriptor.byteCount, lead: lead) }
            var outputs = zip(signals, bytes).map { MarkedOutput(signal: $0, random: rng, bytes: $1.mutableBytes) }
            let r = try mark(tensor: t.name, of: model, rows: m, cols: n, dtype: t.dtype, carriers: carriers,
                             shaping: options.shaping, delta: ownerDelta, signalDelta: plan.delta * share, outputs: &outputs)
            model.release(t)
            return Marked(bytes: bytes, records: r.measuredDeltas.map { measured in
                .init(name: t.name, shape: t.shape, dtype: t.dtype.rawValue, delta: plan.delta, measuredDelta: measured, beta: r.beta,
                      nonFiniteValues: r.nonFinite > 0 ? r.nonFinite : nil)
            })
        }
        defer { prefetcher.drain() }
        // Output files are hashed as their bytes are written (no second pass); input files, when asked, on a
        // background thread while marking runs. Otherwise inputs are recorded by name and size.
        let inputPaths = model.shards.map(\.path)
        let inputs = Locked((digests: [FileDigest](), error: Error?.none))
        let hashing = DispatchGroup()
        if options.hashInputs {
            DispatchQueue.global(qos: .utility).async(group: hashing) {
                do {
                    let digests = try inputPaths.map { try FileDigest.of(file: $0) }
                    inputs.withLock { $0.digests = digests }
                } catch {
                    inputs.withLock { $0.error = error }
                }
            }
        } else {
            let digests = model.shards.map { FileDigest(file: ($0.path as NSString).lastPathComponent, bytes: $0.mapping.size, sha256: nil) }
            inputs.withLock { $0.digests = digests }
        }
        // Each copy's writer calls its observer and its tensors' producers on its own thread, in file order; the
        // state they share goes through a lock all the same, so nothing rests on that.
        struct Written { var hashers: [String: (SHA256, Int)] = [:]; var records: [String: EmbedManifest.TensorRecord] = [:]; var done = 0 }
        let written = (0..<copyCount).map { _ in Locked(Written()) }
        // One writer per copy: the first copy on this thread, the others on their own threads.
        let results = Locked([Result<[String], Error>?](repeating: nil, count: copyCount))
        let writing = DispatchGroup()
        @Sendable func write(_ c: Int) {
            let r = Result {
                try ModelWriter.write(like: model, to: copies[c].destination, overwrite: overwrite, auxiliaryFiles: auxiliary, observer: { file, bytes in
                    written[c].withLock { w in
                        var h = w.hashers[file] ?? (SHA256(), 0)
                        h.0.update(bufferPointer: bytes)
                        h.1 += bytes.count
                        w.hashers[file] = h
                    }
                }) { t in
                    guard let i = position[t.name] else { return nil }
                    return OutputTensor(name: t.name, dtype: t.dtype, shape: t.shape) {
                        let marked = try prefetcher.take(i, consumer: c)
                        let done = written[c].withLock { w in
                            w.records[t.name] = marked.records[c]
                            w.done += 1
                            return w.done
                        }
                        progress(c, t, done)
                        return marked.bytes[c].placed
                    }
                }
            }
            // A copy that failed stops taking tensors: the others must not wait for it.
            if case .failure = r { prefetcher.abandon(consumer: c) }
            results.withLock { $0[c] = r }
        }
        for c in 1..<copyCount {
            writing.enter()
            Thread.detachNewThread { write(c); writing.leave() }
        }
        write(0)
        writing.wait()
        hashing.wait()
        let (inputDigests, inputError) = inputs.withLock { ($0.digests, $0.error) }
        if let inputError { throw inputError }
        let files = try results.withLock { $0 }.map { try $0!.get() }
        return try copies.indices.map { c in
            let destination = copies[c].destination
            let (hashers, records) = written[c].withLock { ($0.hashers, $0.records) }
            let outputDigests = try files[c].map { path -> FileDigest in
                // Relative to the output folder: `1_Pooling/config.json` and `config.json` are different files.
                let name = path.hasPrefix(destination + "/") ? String(path.dropFirst(destination.count + 1)) : (path as NSString).lastPathComponent
                if let (hasher, count) = hashers[name] {
                    return FileDigest(file: name, bytes: count, sha256: hasher.finalize().hex)
                }
                var digest = try FileDigest.of(file: path) // the index and the folder's other files, copied as they were
                digest.file = name
                return digest
            }
            return EmbedManifest(
                tool: "weightmark \(WeightMarkVersion.toolVersion)", formatVersion: options.format.rawValue, keyId: key.id,
                created: ISO8601DateFormatter().string(from: Date()),
                shaping: options.shaping, rank: options.format == .v2 ? TileCarriers.rank : options.rank, delta: plan.delta, expectedBlindZ: plan.expectedBlindZ * ownerDelta / plan.delta,
                deltaCapped: plan.capped, selection: options.selection,
                tensors: plan.entries.compactMap { records[$0.tensor.name] },
                input: inputDigests, output: outputDigests, droppedFiles: otherWeights.isEmpty ? nil : otherWeights)
        }
    }
}

/// One copy written by `Embedder.embed(…copies:…)`: its per-copy signal (none: the owner mark alone) and where it goes.
public struct EmbedCopy: Sendable {
    public var signal: (any CopySignal)?
    public var destination: String
    public init(signal: (any CopySignal)?, destination: String) {
        self.signal = signal
        self.destination = destination
    }
}


import Alignment
import Attacks
import Evidence
import Foundation
import Inference
import LinearAlgebra
import TensorIO
import Verification
import Watermarking

/// One family of attacks swept over a strength grid.
public struct SweepFamily: Sendable {
    public var name: String
    /// What the x axis measures.
    public var axis: String
    public var points: [(x: Double, label: String, spec: String)]

    public init(name: String, axis: String, points: [(x: Double, label: String, spec: String)]) {
        self.name = name; self.axis = axis; self.points = points
    }

    /// The default grid (documented in `weightmark bench --help`).
    public static let defaults: [SweepFamily] = [
        SweepFamily(name: "none", axis: "-", points: [(0, "none", "")]),
        SweepFamily(name: "cast", axis: "bits", points: [(16, "fp16", "fp16"), (16, "bf16", "bf16"), (8, "fp8 E4M3", "fp8")]),
        SweepFamily(name: "int8 per-channel", axis: "bits", points: [(8, "int8", "int8")]),
        SweepFamily(name: "int-k group 128", axis: "bits", points: [8, 6, 4, 3, 2].map { (Double($0), "int\($0) g128", "int\($0):group=128") }),
        SweepFamily(name: "nf4", axis: "bits", points: [(4, "nf4 b64", "nf4:block=64")]),
        SweepFamily(name: "gguf", axis: "bits/weight", points: [(8.5, "Q8_0", "gguf:type=Q8_0"), (6, "Q5_1", "gguf:type=Q5_1"),
                                                            (5.5, "Q5_0", "gguf:type=Q5_0"), (5, "Q4_1", "gguf:type=Q4_1"),
                                                            (4.5, "Q4_0", "gguf:type=Q4_0"), (4.5, "Q4_K", "gguf:type=Q4_K")]),
        SweepFamily(name: "magnitude pruning", axis: "fraction", points: [0.3, 0.5, 0.7, 0.8, 0.9, 0.95].map { ($0, "prune \(Int($0 * 100))%", "prune:fraction=\($0)") }),
        SweepFamily(name: "global pruning", axis: "fraction", points: [0.5, 0.7, 0.9].map { ($0, "global \(Int($0 * 100))%", "prune:fraction=\($0),mode=global") }),
        SweepFamily(name: "random pruning", axis: "fraction", points: [0.5, 0.9].map { ($0, "random \(Int($0 * 100))%", "prune:fraction=\($0),mode=random") }),
        SweepFamily(name: "row pruning", axis: "fraction", points: [0.25, 0.5].map { ($0, "rows \(Int($0 * 100))%", "prune:fraction=\($0),mode=rows") }),
        SweepFamily(name: "2:4 sparsity", axis: "fraction", points: [(0.5, "2:4", "nm:n=2,m=4")]),
        SweepFamily(name: "noise", axis: "σ / rms", points: [0.1, 0.3, 0.5, 1.0, 2.0].map { ($0, "noise \($0)σ", "noise:sigma=\($0)") }),
        SweepFamily(name: "low-rank", axis: "energy kept", points: [0.99, 0.95, 0.9, 0.8, 0.5].map { ($0, "energy \($0)", "lowrank:energy=\($0)") }),
        SweepFamily(name: "LoRA r16", axis: "ε", points: [0.05, 0.1, 0.2, 0.5].map { ($0, "lora ε=\($0)", "lora:rank=16,eps=\($0)") }),
        SweepFamily(name: "dense drift", axis: "ε", points: [0.05, 0.1, 0.3].map { ($0, "drift ε=\($0)", "drift:eps=\($0)") }),
        SweepFamily(name: "overwrite", axis: "× strength", points: [1, 2, 4, 8].map { (Double($0), "overwrite \($0)×", "overwrite:strength=\($0)") }),
        SweepFamily(name: "merge", axis: "α (other model)", points: [0.25, 0.5, 0.75].map { ($0, "merge α=\($0)", "merge:alpha=\($0)") }),
        SweepFamily(name: "collusion", axis: "copies", points: [2, 4, 8].map { (Double($0), "average of \($0)", "collusion:copies=\($0)") }),
        SweepFamily(name: "FFN permutation", axis: "-", points: [(1, "permute FFN", "permute")]),
        // Function-preserving re-packaging (names, orientation, layout), applied after any attack in the spec.
        SweepFamily(name: "re-packaging", axis: "-", points: [
            (1, "renamed", "repack:rename"), (2, "transposed", "repack:transpose"), (3, "renamed + transposed", "repack:rename+transpose"),
            (4, "same-shape triples fused", "repack:fuse"), (5, "vocabulary +71 rows", "repack:vocab"),
            (6, "first half of rows (shard 1/2)", "repack:slice"), (7, "renamed + Q4_K", "gguf:type=Q4_K,repack:rename"),
        ]),
    ]
}

extension SweepFamily {
    /// Function-preserving edits a leaker gets for free, alone and followed by int4 (each detected blind and
    /// informed after alignment): head permutation needs the head count; FFN unit rescaling and residual rotation are
    /// defined for SwiGLU/RMSNorm (Llama) models only.
    public static func derivatives(layout: TransformerLayout?) -> [SweepFamily] {
        guard let layout else { return [] }
        let heads = layout.heads.map { h in "permute-heads:heads=\(h),kv=\(layout.kvHeads ?? h)" }
        var points: [(x: Double, label: String, spec: String)] = []
        if let heads {
            points += [(1, "permute heads", heads), (2, "permute FFN + heads", "permute," + heads),
                       (3, "permute FFN + heads, int4", "permute,\(heads),int4:group=128")]
        }
        if layout.family == .llama {
            points += [(4, "rescale FFN units (±, 4×)", "scale-ffn"), (5, "rotate residual (norms fused)", "rotate"),
                       (6, "rotate residual, int4", "rotate,int4:group=128")]
            if let heads { points.append((7, "rotate + permute + rescale", "rotate,\(heads),permute,scale-ffn")) }
        }
        return points.isEmpty ? [] : [SweepFamily(name: "function-preserving", axis: "-", points: points)]
    }
}

/// The outcome of one attack at one strength.
public struct SweepPoint: Sendable, Codable {
    public var family: String
    public var label: String
    public var spec: String
    public var x: Double
    public var blindZ: Double
    public var informedZ: Double
    public var log10PBoundBlind: Double
    public var log10PBoundInformed: Double
    public var detectedBlind: Bool
    public var detectedInformed: Bool
    /// ‖W′ − W_marked‖ / ‖W_marked‖ over the marked tensors.
    public var damage: Double
    public var seconds: Double
    /// Function kept: min and mean cosine with the marked model's outputs on the probe inputs (BERT: sentence
    /// embeddings; Llama: last-position logits), nil when the model has no forward pass here.
    public var functionMinCosine: Double?
    public var functionMeanCosine: Double?
    /// Llama models: share of probe positions whose top-1 next token is the marked model's.
    public var functionTop1Agreement: Double?
    /// Informed Z without alignment, when alignment rewrote something (informedZ is after alignment, as `detect` runs).
    public var informedUnalignedZ: Double?
    /// What alignment undid, in short (nil when nothing).
    public var alignment: String?
}

/// Runs attack sweeps against a marked model, with detection blind and informed.
///
/// Everything reused across points is computed once: the selected tensors' marked and original values and
/// their carriers. Points are independent and run two at a time with one BLAS thread each (tiny projections
/// gain nothing from BLAS threads, and two threads per task would oversubscribe two cores).
/// Sendable: immutable after init (models, key, precomputed values) but for `alignment`, which callers set before
/// `run`; points only read it, so they may run concurrently.
public final class SweepRunner: @unchecked Sendable {
    public let original: SafetensorsModel
    public let marked: SafetensorsModel
    public let key: WatermarkKey
    public let alpha: Double
    public let delta: Double
    public let format: MarkVersion
    let options: DetectOptions
    let selected: [ModelTensor]
    let markedValues: [String: [Float]]
    let originalValues: [String: [Float]]
    /// 2-D float tensors not selected for marking (small k/v, type embeddings): alignment needs them, detection ignores them.
    let otherMatrices: [ModelTensor]
    /// Alignment before informed detection (as `detect --reference`); nil skips it.
    public var alignment: AlignOptions?
    /// The forward pass measuring function kept (BERT or Llama; nil for other models) and the marked model's outputs.
    public let functionProbe: FunctionProbe?
    /// Why the model's forward pass could not run (function kept then not measured).
    public let functionProbeFailure: String?
    let markedOutputs: ProbeOutputs?

    /// - Parameter format: the format `marked` carries; detection and the re-marking attacks use it.
    /// - Parameter config: the model's config.json (heads, activation): alignment and the BERT function probe use it.
    /// - Parameter llama: the same config.json read for the Llama forward pass (`LlamaConfig.load(near:)`); with it,
    ///   Llama-layout models get the function-kept measure.
    public init(original: SafetensorsModel, marked: SafetensorsModel, key: WatermarkKey, options: DetectOptions, delta: Double,
                format: MarkVersion = .v2, config: ModelConfig? = nil, llama: LlamaConfig? = nil) throws {
        self.original = original
        self.marked = marked
        self.key = key
        self.alpha = options.alpha
        self.delta = delta
        self.format = format
        var detect = options
        detect.format = format == .v1 ? .v1 : .v2
        detect.workers = 1 // points already run in parallel
        self.options = detect
        selected = marked.tensors.filter { options.selection.selects(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        var m: [String: [Float]] = [:], o: [String: [Float]] = [:]
        for t in selected {
            m[t.name] = try marked.floats(of: t)
            if let r = original.tensor(named: t.name), r.shape == t.shape { o[t.name] = try original.floats(of: r) }
        }
        markedValues = m; originalValues = o
        let selectedNames = Set(selected.map(\.name))
        otherMatrices = marked.tensors.filter { $0.shape.count == 2 && $0.dtype.isSupportedFloat && !selectedNames.contains($0.name) }
        var alignment = AlignOptions()
        alignment.config = config
        self.alignment = alignment
        // A forward pass the weights do not fit (config.json disagreeing with the shapes) leaves the function column
        // empty and says why, rather than stopping the sweep.
        let probe = FunctionProbe.recognize(names: marked.tensors.map(\.name), bertHeads: config?.heads, llama: llama)
        do {
            markedOutputs = try probe?.outputs(of: marked)
            functionProbe = probe
            functionProbeFailure = nil
        } catch {
            markedOutputs = nil
            functionProbe = nil
            functionProbeFailure = "\(error)"
        }
    }

    var context: AttackContext {
        let delta = self.delta, format = self.format
        return AttackContext(remark: { copy, name, rows, cols, values, scale in
            try Remarking.mark(copy: copy, name: name, rows: rows, cols: cols, values: &values, delta: delta * scale, format: format)
        }, original: original)
    }

    /// Re-packages matrices the way leaked copies circulate, without changing what they compute: `rename` prefixes
    /// every name, `transpose` stores every matrix transposed, `fuse` concatenates consecutive same-shaped matrices
    /// three at a time (as q/k/v are fused), `vocab` appends 71 rows to the largest matrix (a resized vocabulary),
    /// `slice` keeps the first half of every matrix's rows (one model-parallel shard of two). Joined with `+`.
    static func repackaged(_ tensors: [(name: String, shape: [Int], values: [Float])], _ kinds: [String]) throws -> [(name: String, shape: [Int], values: [Float])] {
        var out = tensors
        for kind in kinds {
            switch kind {
            case "rename": out = out.map { ("leaked." + $0.name.replacingOccurrences(of: ".", with: "_"), $0.shape, $0.values) }
            case "transpose":
                out = out.map { ($0.name, [$0.shape[1], $0.shape[0]], Matrix(rows: $0.shape[0], cols: $0.shape[1], storage: $0.values).transposed.storage) }
            case "fuse":
                var fused: [(name: String, shape: [Int], values: [Float])] = []
                var i = 0
                while i < out.count {
                    if i + 2 < out.count, out[i].shape == out[i + 1].shape, out[i].shape == out[i + 2].shape {
                        fused.append((out[i].name + ".fused", [3 * out[i].shape[0], out[i].shape[1]], out[i].values + out[i + 1].values + out[i + 2].values))
                        i += 3
                    } else {
                        fused.append(out[i]); i += 1
                    }
                }
                out = fused
            case "vocab":
                guard let k = out.indices.max(by: { out[$0].values.count < out[$1].values.count }) else { break }
                var rng = SplitMix64(seed: 71)
                let rms = (out[k].values.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(out[k].values.count)).squareRoot()
                let extra = (0..<(71 * out[k].shape[1])).map { _ in rng.nextGaussian() * Float(rms) }
                out[k] = (out[k].name, [out[k].shape[0] + 71, out[k].shape[1]], out[k].values + extra)
            case "slice":
                out = out.map { ($0.name, [$0.shape[0] / 2, $0.shape[1]], Array($0.values[0..<($0.shape[0] / 2 * $0.shape[1])])) }
            default:
                throw AttackError.unknownParameter(attack: "repack", parameter: kind, allowed: ["rename", "transpose", "fuse", "vocab", "slice"])
            }
        }
        return out
    }

    /// Runs one point.
    public func run(family: String, x: Double, label: String, spec: String) throws -> SweepPoint {
        let start = Date()
        // "repack:…" parts re-package after the attacks of the rest of the chain.
        let parts = spec.split(separator: ",").map(String.init)
        let repack = parts.first { $0.hasPrefix("repack:") }.map { String($0.dropFirst("repack:".count)).split(separator: "+").map(String.init) } ?? []
        let attackSpec = parts.filter { !$0.hasPrefix("repack:") }.joined(separator: ",")
        let attacked = attackSpec.isEmpty ? [:] : try AttackRunner.apply(AttackCatalog.chain(attackSpec), to: marked, context: context)
        var num = 0.0, den = 0.0
        var suspectTensors: [(name: String, shape: [Int], values: [Float])] = []
        for t in selected {
            let w = markedValues[t.name]!
            let suspect = attacked[t.name]?.values ?? w
            for i in w.indices {
                let d = Double(suspect[i]) - Double(w[i])
                num += d * d; den += Double(w[i]) * Double(w[i])
            }
            suspectTensors.append((t.name, t.shape, suspect))
        }
        for t in otherMatrices {
            suspectTensors.append((t.name, t.shape, try attacked[t.name]?.values ?? marked.floats(of: t)))
        }
        // Detection as the CLI runs it, on the attacked matrices held in memory.
        let suspect = InMemoryTensors(path: label, tensors: try Self.repackaged(suspectTensors, repack))
        var referenceTensors = selected.compactMap { t in originalValues[t.name].map { (name: t.name, shape: t.shape, values: $0) } }
        for t in otherMatrices { referenceTensors.append((t.name, t.shape, try original.floats(of: t))) }
        let reference = InMemoryTensors(path: original.path, tensors: referenceTensors)
        // The one verification path `detect` runs: blind, then informed after key-free alignment.
        let keys = KeyCandidates.single(key)
        var verification = VerificationOptions()
        verification.detect = options
        verification.align = alignment != nil
        if let alignment { verification.alignment = alignment }
        let b = try Verifier.verify(suspect: suspect, reference: nil, keys: keys, options: verification).report
        let informed = try Verifier.verify(suspect: suspect, reference: reference, keys: keys, options: verification)
        let i = informed.report
        var summary: String?
        if let report = informed.alignment, report.changed {
            summary = report.summaryLines.filter { !$0.contains("already aligned") }.prefix(3).joined(separator: "; ")
        }
        var unalignedOptions = verification
        unalignedOptions.align = false
        let unaligned = informed.alignment?.changed == true
            ? try Verifier.verify(suspect: suspect, reference: reference, keys: keys, options: unalignedOptions).report.combinedZ : nil
        var kept: FunctionKept?
        if let functionProbe, let markedOutputs {
            kept = FunctionKept(reference: markedOutputs, attacked: try functionProbe.outputs(of: marked, overrides: attacked.mapValues(\.values)))
        }
        return SweepPoint(family: family, label: label, spec: spec.isEmpty ? "none" : spec, x: x,
                          blindZ: b.combinedZ, informedZ: i.combinedZ,
                          log10PBoundBlind: b.log10PValueBound, log10PBoundInformed: i.log10PValueBound,
                          detectedBlind: b.detected, detectedInformed: i.detected,
                          damage: den > 0 ? (num / den).squareRoot() : 0, seconds: Date().timeIntervalSince(start),
                          functionMinCosine: kept?.minCosine, functionMeanCosine: kept?.meanCosine, functionTop1Agreement: kept?.top1Agreement,
                          informedUnalignedZ: unaligned, alignment: summary)
    }

    /// Runs every point of `families`, `concurrency` at a time; `progress` gets each finished point.
    public func run(_ families: [SweepFamily], concurrency: Int = 2,
                    progress: @escaping @Sendable (SweepPoint, Int, Int) -> Void = { _, _, _ in }) async throws -> [SweepPoint] {
        let jobs = families.flatMap { f in f.points.map { (f.name, $0.x, $0.label, $0.spec) } }
        BLASInfo.setThreadCount(1)
        defer { BLASInfo.setThreadCount(ProcessInfo.processInfo.activeProcessorCount) }
        var results = [SweepPoint?](repeating: nil, count: jobs.count)
        var finished = 0
        try await withThrowingTaskGroup(of: (Int, SweepPoint).self) { group in
            var next = 0
            func submit() {
                let k = next
                let job = jobs[k]
                group.addTask { (k, try self.run(family: job.0, x: job.1, label: job.2, spec: job.3)) }
                next += 1
            }
            while next < min(concurrency, jobs.count) { submit() }
            while let (k, point) = try await group.next() {
                results[k] = point
                finished += 1
                progress(point, finished, jobs.count)
                if next < jobs.count { submit() }
            }
        }
        return results.compactMap { $0 }
    }
}

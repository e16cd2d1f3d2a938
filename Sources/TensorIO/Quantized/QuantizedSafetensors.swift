import Foundation

/// A safetensors model whose linear weights are stored by a hub quantizer, seen as the float matrices they stand for
/// (docs/QUANTIZED.md). Recognized by content — the component tensors each library writes next to a weight —
/// with config.json's quantization settings where the content alone is ambiguous, never by file name:
///
/// - **MLX affine** (`mlx_lm.convert -q`): `X.weight` U32 `[out, in·bits/32]` (a little-endian bit stream per row),
///   `X.scales` and `X.biases` `[out, in/group]`; w = scale·q + bias. Bits 2, 3, 4, 5, 6, 8; group 32, 64, 128;
///   per-layer overrides in config.json's `quantization`.
/// - **MLX microscaling** (`mlx_lm.convert -q --q-mode mxfp4|nvfp4|mxfp8`): `X.weight` U32 (the same bit stream) and
///   `X.scales` U8 `[out, in/group]`, no biases; w = element · scale, elements FP4 E2M1 (mxfp4, nvfp4) or FP8 E4M3
///   (mxfp8), scales E8M0 = 2^(s − 127) per 32 (mxfp4, mxfp8) or E4M3 per 16 (nvfp4). The mode follows from the
///   shapes alone (bits × group is 128, 64 or 256).
/// - **bitsandbytes 4-bit** (NF4/FP4, double quantization too): `X.weight` U8 (two codes a byte, the even element in
///   the high nibble), `X.weight.absmax`, `X.weight.quant_map`, `X.weight.quant_state.bitsandbytes__nf4|fp4` (JSON
///   bytes: shape, block size, nested block size and offset), with `X.weight.nested_absmax` and
///   `X.weight.nested_quant_map` when double-quantized; w = quant_map[q]·absmax[block].
/// - **bitsandbytes LLM.int8**: `X.weight` I8 `[out, in]` and `X.SCB` F32 `[out]`; w = q·SCB[row]/127.
/// - **FP8 E4M3** with `X.weight_scale_inv` blocks (DeepSeek/Qwen FP8: w = fp8·scale_inv of its block) or
///   `X.weight_scale` per tensor or per row (compressed-tensors float-quantized: w = fp8·scale), or alone.
///
/// Component tensors are hidden; everything else passes through unchanged.
/// Sendable: immutable after init (every stored property is a `let`); `base` is itself Sendable and only read.
public final class QuantizedSafetensors: TensorSource, @unchecked Sendable {
    public let base: SafetensorsModel
    public var path: String { base.path }
    public let sourceTensors: [SourceTensor]
    private let logical: [String: Logical]
    private let byName: [String: Int]

    enum Scheme: Sendable {
        case mlxAffine(bits: Int, group: Int)
        case mlxMicroscaled(MLXMicroscaling)
        case bnb4(blocksize: Int, nestedBlocksize: Int?, nestedOffset: Float)
        case int8Rows
        case fp8(scaleBlock: (rows: Int, cols: Int)?)
        /// GPTQ (`qweight` [in·bits/32, out] packed along in; `qzeros` [groups, out·bits/32]; `g_idx`); `zeroPlusOne`:
        /// the stored zero is z − 1 (checkpoint_format "gptq"), not z ("gptq_v2").
        case gptq(bits: Int, zeroPlusOne: Bool)
        /// AWQ "gemm" (`qweight` [in, out/8], nibble order 0 2 4 6 1 3 5 7; `qzeros` [in/group, out/8]).
        case awq(group: Int)
        /// AWQ "gemv" (`qweight` [out, in/8], natural nibble order; `qzeros` [out, zw], `scales` [out, 8·zw], padded).
        case awqGEMV(group: Int)
        /// compressed-tensors pack-quantized (`weight_packed` [out, in·bits/32], stored unsigned = signed + 2^(bits−1));
        /// `zeroPacked`: asymmetric, `weight_zero_point` [⌈out·bits/32⌉, groups] packed along the output dimension.
        case packQuantized(bits: Int, group: Int, zeroPacked: Bool)
        /// compressed-tensors FP4 (`weight_packed` U8 [out, in/2], the even element in the low nibble): NVFP4 (E4M3
        /// scales per 16 divided by `weight_global_scale`) or MXFP4 (E8M0 scales per 32).
        case packedFP4(nvfp4: Bool)
        /// HQQ (`W_q` with `scale`, `zero`, `shape`, `nbits`, `group_size`, `axis`, `packing` beside it).
        case hqq(HQQLayout)
    }

    // Sendable: a value type holding only values (names, shapes, `Scheme`, `ModelTensor`s), no reference or pointer.
    struct Logical: @unchecked Sendable {
        var name: String
        var shape: [Int]
        var storage: String
        var scheme: Scheme
        var parts: [String: ModelTensor]
    }

    private init(base: SafetensorsModel, logical: [String: Logical]) {
        self.base = base
        self.logical = logical
        let hidden = Set(logical.values.flatMap { $0.parts.values.map(\.name) })
        // Each logical matrix is listed where its packed weight stands in the file.
        var anchored: [String: Logical] = [:]
        for l in logical.values { if let a = l.parts["qweight"] ?? l.parts["packed"] ?? l.parts["weight"] { anchored[a.name] = l } }
        var list: [SourceTensor] = []
        for t in base.tensors {
            if let l = anchored[t.name] {
                list.append(SourceTensor(name: l.name, shape: l.shape, storage: l.storage, isFloating: true))
            } else if !hidden.contains(t.name) {
                list.append(SourceTensor(name: t.name, shape: t.shape, storage: t.dtype.rawValue, isFloating: t.dtype.isSupportedFloat))
            }
        }
        sourceTensors = list
        byName = Dictionary(list.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
    }

    public func sourceTensor(named name: String) -> SourceTensor? { byName[name].map { sourceTensors[$0] } }

    public func releaseTensor(named name: String) {
        if let l = logical[name] { for p in l.parts.values { base.release(p) } } else { base.releaseTensor(named: name) }
    }

    public func decodeFloats(named name: String) throws -> [Float] {
        guard let l = logical[name] else { return try base.decodeFloats(named: name) }
        switch l.scheme {
        case let .mlxAffine(bits, group): return try decodeMLX(l, bits: bits, group: group)
        case let .mlxMicroscaled(mode): return try decodeMLXMicroscaled(l, mode: mode)
        case let .bnb4(blocksize, nested, offset): return try decodeBnb4(l, blocksize: blocksize, nestedBlocksize: nested, nestedOffset: offset)
        case .int8Rows: return try decodeInt8(l)
        case let .fp8(block): return try decodeFP8(l, block: block)
        case let .gptq(bits, plusOne): return try decodeGPTQ(l, bits: bits, zeroPlusOne: plusOne)
        case let .awq(group): return try decodeAWQ(l, group: group)
        case let .awqGEMV(group): return try decodeAWQGEMV(l, group: group)
        case let .packQuantized(bits, group, zeroPacked): return try decodePackQuantized(l, bits: bits, group: group, zeroPacked: zeroPacked)
        case let .packedFP4(nvfp4): return try decodePackedFP4(l, nvfp4: nvfp4)
        case let .hqq(layout): return try decodeHQQ(l, layout)
        }
    }

    /// How many tensors it read through a quantizer, by storage (for `inspect`).
    public var quantizedSummary: [String: Int] {
        Dictionary(grouping: logical.values, by: \.storage).mapValues(\.count)
    }

    // MARK: Recognition

    /// The model seen through its quantizer, or nil when no weight is stored by a recognized one.
    /// - Throws: `TensorIOError.invalidTensor` when a recognized layout has inconsistent shapes.
    public static func wrapIfQuantized(_ model: SafetensorsModel) throws -> QuantizedSafetensors? {
        let names = Dictionary(model.tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let config = ShippedConfig.sidecar("config.json", near: model.path).flatMap { ShippedConfig.jsonObject(at: $0, maximumBytes: 16 << 20) }
        let mlxConfig = (config?["quantization"] as? [String: Any]) ?? (config?["quantization_config"] as? [String: Any])
        var logical: [String: Logical] = [:]
        let hfQuant = config?["quantization_config"] as? [String: Any]
        for t in model.tensors where t.name.hasSuffix(".qweight") && t.dtype == .i32 && t.shape.count == 2 {
            let prefix = String(t.name.dropLast(".qweight".count))
            guard let zeros = names[prefix + ".qzeros"], let scales = names[prefix + ".scales"] else { continue }
            let l = try packedInt(qweight: t, zeros: zeros, scales: scales, gIdx: names[prefix + ".g_idx"], prefix: prefix, config: hfQuant)
            logical[l.name] = l
        }
        for t in model.tensors where t.name.hasSuffix(".weight_packed") && t.dtype == .i32 && t.shape.count == 2 {
            let prefix = String(t.name.dropLast(".weight_packed".count))
            guard let scale = names[prefix + ".weight_scale"] else { continue }
            let l = try packQuantized(packed: t, scale: scale, shape: names[prefix + ".weight_shape"], zero: names[prefix + ".weight_zero_point"],
                                      prefix: prefix, model: model)
            logical[l.name] = l
        }
        for t in model.tensors where t.name.hasSuffix(".weight_packed") && t.dtype == .u8 && t.shape.count == 2 {
            let prefix = String(t.name.dropLast(".weight_packed".count))
            guard let scale = names[prefix + ".weight_scale"] else { continue }
            let l = try packedFP4(packed: t, scale: scale, global: names[prefix + ".weight_global_scale"], prefix: prefix)
            logical[l.name] = l
        }
        for t in model.tensors where t.name.hasSuffix(".W_q") {
            let prefix = String(t.name.dropLast(".W_q".count))
            guard names[prefix + ".scale"] != nil, names[prefix + ".zero"] != nil, names[prefix + ".shape"] != nil else { continue }
            let l = try hqq(weight: t, prefix: prefix, names: names, model: model)
            logical[l.name] = l
        }
        for t in model.tensors where t.name.hasSuffix(".weight") {
            let prefix = String(t.name.dropLast(".weight".count))
            if t.dtype == .u32, t.shape.count == 2, let scales = names[prefix + ".scales"], let biases = names[prefix + ".biases"] {
                let (bits, group) = try mlxParameters(weight: t, scales: scales, biases: biases, module: prefix, config: mlxConfig)
                logical[t.name] = Logical(name: t.name, shape: [t.shape[0], scales.shape[1] * group], storage: "MLX affine q\(bits) g\(group)",
                                          scheme: .mlxAffine(bits: bits, group: group), parts: ["weight": t, "scales": scales, "biases": biases])
            } else if t.dtype == .u32, t.shape.count == 2, let scales = names[prefix + ".scales"], scales.dtype == .u8, names[prefix + ".biases"] == nil {
                let mode = try MLXMicroscaling(weight: t, scales: scales)
                logical[t.name] = Logical(name: t.name, shape: [t.shape[0], scales.shape[1] * mode.group], storage: "MLX \(mode.rawValue) g\(mode.group)",
                                          scheme: .mlxMicroscaled(mode), parts: ["weight": t, "scales": scales])
            } else if t.dtype == .u8, let state = names[t.name + ".quant_state.bitsandbytes__nf4"] ?? names[t.name + ".quant_state.bitsandbytes__fp4"] {
                logical[t.name] = try bnb4(weight: t, state: state, names: names, model: model)
            } else if t.dtype == .i8, t.shape.count == 2, let scb = names[prefix + ".SCB"] {
                guard scb.shape.reduce(1, *) == t.shape[0], scb.dtype.isSupportedFloat else {
                    throw TensorIOError.invalidTensor(name: scb.name, reason: "LLM.int8 row scales must hold one float per row of \(t.name) (\(t.shape[0])), found \(scb.shape) \(scb.dtype.rawValue)")
                }
                logical[t.name] = Logical(name: t.name, shape: t.shape, storage: "bitsandbytes LLM.int8", scheme: .int8Rows, parts: ["weight": t, "scb": scb])
            } else if t.dtype == .f8E4M3, t.shape.count == 2 {
                logical[t.name] = try fp8(weight: t, names: names, config: config)
            }
        }
        return logical.isEmpty ? nil : QuantizedSafetensors(base: model, logical: logical)
    }

    static func mlxParameters(weight: ModelTensor, scales: ModelTensor, biases: ModelTensor, module: String,
                              config: [String: Any]?) throws -> (bits: Int, group: Int) {
        let rows = weight.shape[0], packed = weight.shape[1], groups = scales.shape.count == 2 ? scales.shape[1] : 0
        guard scales.shape == [rows, groups], biases.shape == scales.shape, groups > 0, scales.dtype.isSupportedFloat, biases.dtype.isSupportedFloat else {
            throw TensorIOError.invalidTensor(name: weight.name, reason: "MLX affine scales \(scales.shape) and biases \(biases.shape) must both be [\(rows), groups] floats")
        }
        func fits(_ bits: Int, _ group: Int) -> Bool {
            let (cols, o) = groups.multipliedReportingOverflow(by: group)
            return !o && [2, 3, 4, 5, 6, 8].contains(bits) && packed * 32 == cols * bits
        }
        // config.json: a per-module override ("model.layers.0.mlp.up_proj": {...}), else the model-wide setting.
        var candidates: [(Int, Int)] = []
        for entry in [config?[module] as? [String: Any], config] {
            if let e = entry, let b = e["bits"] as? Int, let g = e["group_size"] as? Int { candidates.append((b, g)) }
        }
        // Without a config (or one that does not fit): MLX's default group 64 first, then 32 and 128.
        for g in [64, 32, 128] where (packed * 32) % (groups * g) == 0 { candidates.append(((packed * 32) / (groups * g), g)) }
        guard let found = candidates.first(where: { fits($0.0, $0.1) }) else {
            throw TensorIOError.invalidTensor(name: weight.name, reason: "MLX affine: \(packed) packed words and \(groups) groups a row fit no bit width 2–8 with group 32, 64 or 128")
        }
        return (found.0, found.1)
    }

    static func bnb4(weight: ModelTensor, state: ModelTensor, names: [String: ModelTensor], model: SafetensorsModel) throws -> Logical {
        let json = model.withBytes(of: state) { Data($0) }
        guard let object = try? JSONSerialization.jsonObject(with: json) as? [String: Any],
              let shape = object["shape"] as? [Int], shape.count == 2, shape.allSatisfy({ $0 > 0 }),
              let blocksize = object["blocksize"] as? Int, blocksize > 0, blocksize <= 1 << 20 else {
            throw TensorIOError.invalidTensor(name: state.name, reason: "the bitsandbytes quant state is not JSON with a 2-D shape and a block size")
        }
        let (count, overflow) = shape[0].multipliedReportingOverflow(by: shape[1])
        guard !overflow, weight.shape.reduce(1, *) * 2 == count + (count & 1) else {
            throw TensorIOError.invalidTensor(name: weight.name, reason: "holds \(weight.shape.reduce(1, *)) bytes, not the \((count + 1) / 2) that 4-bit codes of \(shape) need")
        }
        guard let absmax = names[weight.name + ".absmax"], let map = names[weight.name + ".quant_map"], map.shape.reduce(1, *) == 16, map.dtype.isSupportedFloat else {
            throw TensorIOError.invalidTensor(name: weight.name, reason: "a bitsandbytes 4-bit weight needs .absmax and a 16-entry float .quant_map")
        }
        let blocks = (count + blocksize - 1) / blocksize
        guard absmax.shape.reduce(1, *) == blocks else {
            throw TensorIOError.invalidTensor(name: absmax.name, reason: "has \(absmax.shape.reduce(1, *)) entries, not one per block of \(blocksize) (\(blocks))")
        }
        var parts = ["weight": weight, "absmax": absmax, "map": map]
        var nested: Int?
        var offset: Float = 0
        let double = absmax.dtype == .u8
        if double {
            guard let nb = object["nested_blocksize"] as? Int, nb > 0, let nAbs = names[weight.name + ".nested_absmax"],
                  let nMap = names[weight.name + ".nested_quant_map"], nMap.shape.reduce(1, *) == 256, nAbs.dtype.isSupportedFloat,
                  nAbs.shape.reduce(1, *) == (blocks + nb - 1) / nb else {
                throw TensorIOError.invalidTensor(name: weight.name, reason: "double-quantized (U8 absmax) without a consistent nested_blocksize, .nested_absmax and 256-entry .nested_quant_map")
            }
            nested = nb
            offset = Float((object["nested_offset"] as? Double) ?? 0)
            parts["nestedAbsmax"] = nAbs
            parts["nestedMap"] = nMap
        } else if !absmax.dtype.isSupportedFloat {
            throw TensorIOError.invalidTensor(name: absmax.name, reason: "absmax stored as \(absmax.dtype.rawValue), neither float nor U8 (double quantization)")
        }
        let type = ((object["quant_type"] as? String) ?? (state.name.hasSuffix("nf4") ? "nf4" : "fp4")).uppercased()
        return Logical(name: weight.name, shape: shape, storage: "bitsandbytes \(type)\(double ? " (double-quantized)" : "") block \(blocksize)",
                       scheme: .bnb4(blocksize: blocksize, nestedBlocksize: nested, nestedOffset: offset), parts: parts)
    }

    static func fp8(weight: ModelTensor, names: [String: ModelTensor], config: [String: Any]?) throws -> Logical {
        let prefix = String(weight.name.dropLast(".weight".count))
        let rows = weight.shape[0], cols = weight.shape[1]
        if let inv = names[prefix + ".weight_scale_inv"] {
            guard inv.shape.count == 2, inv.shape[0] > 0, inv.shape[1] > 0, inv.dtype.isSupportedFloat else {
                throw TensorIOError.invalidTensor(name: inv.name, reason: "FP8 block scales must be a 2-D float grid, found \(inv.shape) \(inv.dtype.rawValue)")
            }
            let configured = ((config?["quantization_config"] as? [String: Any])?["weight_block_size"] as? [Int]).flatMap { $0.count == 2 ? ($0[0], $0[1]) : nil }
            let block = configured ?? ((rows + inv.shape[0] - 1) / inv.shape[0], (cols + inv.shape[1] - 1) / inv.shape[1])
            guard block.0 > 0, block.1 > 0, (rows + block.0 - 1) / block.0 == inv.shape[0], (cols + block.1 - 1) / block.1 == inv.shape[1] else {
                throw TensorIOError.invalidTensor(name: inv.name, reason: "a \(inv.shape) grid of scales does not tile \(weight.shape) in \(block.0)×\(block.1) blocks")
            }
            return Logical(name: weight.name, shape: weight.shape, storage: "FP8 E4M3 block \(block.0)×\(block.1)", scheme: .fp8(scaleBlock: (block.0, block.1)),
                           parts: ["weight": weight, "scale": inv])
        }
        if let s = names[prefix + ".weight_scale"] {
            let n = s.shape.reduce(1, *)
            guard s.dtype.isSupportedFloat, n == 1 || n == rows else {
                throw TensorIOError.invalidTensor(name: s.name, reason: "FP8 scales must be one per tensor or one per row (\(rows)), found \(s.shape)")
            }
            return Logical(name: weight.name, shape: weight.shape, storage: n == 1 ? "FP8 E4M3 per tensor" : "FP8 E4M3 per channel",
                           scheme: .fp8(scaleBlock: n == 1 ? (rows, cols) : (1, cols)), parts: ["weight": weight, "scale": s])
        }
        return Logical(name: weight.name, shape: weight.shape, storage: "FP8 E4M3", scheme: .fp8(scaleBlock: nil), parts: ["weight": weight])
    }

    static func packedInt(qweight: ModelTensor, zeros: ModelTensor, scales: ModelTensor, gIdx: ModelTensor?, prefix: String,
                          config: [String: Any]?) throws -> Logical {
        let method = (config?["quant_method"] as? String)?.lowercased()
        guard scales.shape.count == 2, scales.dtype.isSupportedFloat, zeros.dtype == .i32, zeros.shape.count == 2 else {
            throw TensorIOError.invalidTensor(name: qweight.name, reason: "packed-integer weight without 2-D float scales and I32 zeros")
        }
        let version = (config?["version"] as? String)?.lowercased()
        if method == "awq" || method == nil, gIdx == nil, version == "gemv" || (qweight.shape[0] == scales.shape[0] && zeros.shape[0] == scales.shape[0]) {
            return try awqGEMV(qweight: qweight, zeros: zeros, scales: scales, prefix: prefix, config: config)
        }
        let out = scales.shape[1], groups = scales.shape[0]
        if method == "awq" || (gIdx == nil && qweight.shape[1] * 8 == out && method != "gptq") {
            // AWQ gemm: qweight [in, out/8].
            let inFeatures = qweight.shape[0]
            guard qweight.shape[1] * 8 == out, groups > 0, inFeatures % groups == 0, zeros.shape == [groups, out / 8] else {
                throw TensorIOError.invalidTensor(name: qweight.name, reason: "AWQ: qweight \(qweight.shape), qzeros \(zeros.shape), scales \(scales.shape) do not fit [in, out/8], [in/group, out/8], [in/group, out]")
            }
            return Logical(name: prefix + ".weight", shape: [out, inFeatures], storage: "AWQ int4 g\(inFeatures / groups)", scheme: .awq(group: inFeatures / groups),
                           parts: ["qweight": qweight, "zeros": zeros, "scales": scales])
        }
        // GPTQ: qweight [in·bits/32, out]; bits from config or from g_idx's length.
        let inFeatures = gIdx.map { $0.shape.reduce(1, *) } ?? 0
        // The layer's own packing says its bits (GPTQModel's per-module `dynamic` overrides), else config.json's.
        let configured = config?["bits"] as? Int
        let bits = inFeatures > 0 && (qweight.shape[0] * 32) % inFeatures == 0 ? qweight.shape[0] * 32 / inFeatures : (configured ?? 4)
        let format = ((config?["checkpoint_format"] as? String) ?? (config?["format"] as? String) ?? "gptq").lowercased()
        guard format == "gptq" || format == "gptq_v2" else {
            throw TensorIOError.invalidTensor(name: qweight.name, reason: "GPTQ checkpoint_format \"\(format)\" (GPTQModel's planar or kernel-specific packing) is not read; re-save it with checkpoint_format \"gptq\" or \"gptq_v2\"")
        }
        guard [2, 3, 4, 8].contains(bits), qweight.shape[1] == out, let g = gIdx, g.dtype == .i32, g.shape.count == 1, qweight.shape[0] * 32 == inFeatures * bits,
              zeros.shape == [groups, (out * bits + 31) / 32] else {
            throw TensorIOError.invalidTensor(name: qweight.name, reason: "GPTQ: qweight \(qweight.shape), qzeros \(zeros.shape), scales \(scales.shape), g_idx \(gIdx?.shape ?? []) do not fit \(bits)-bit packing (2, 3, 4 and 8 bits are read)")
        }
        let v2 = format == "gptq_v2"
        return Logical(name: prefix + ".weight", shape: [out, inFeatures], storage: "GPTQ int\(bits)\(v2 ? " (v2 zeros)" : "")", scheme: .gptq(bits: bits, zeroPlusOne: !v2),
                       parts: ["qweight": qweight, "zeros": zeros, "scales": scales, "gidx": g])
    }

    /// AutoAWQ's `WQLinear_GEMV`: qweight [out, in/8], qzeros [out, zw], scales [out, 8·zw], zw = ⌈⌈in/group⌉/8⌉
    /// rounded up to a multiple of 1 (group ≥ 128), 2 (64) or 4 (32); the columns past the real groups are padding.
    static func awqGEMV(qweight: ModelTensor, zeros: ModelTensor, scales: ModelTensor, prefix: String, config: [String: Any]?) throws -> Logical {
        let out = qweight.shape[0], inFeatures = qweight.shape[1] * 8, zw = zeros.shape[1]
        func zerosWidth(_ group: Int) -> Int {
            let multiple = group >= 128 ? 1 : group == 64 ? 2 : 4
            let base = ((inFeatures + group - 1) / group + 7) / 8
            return (base + multiple - 1) / multiple * multiple
        }
        let groups = [config?["group_size"] as? Int].compactMap { $0 } + [128, 64, 32]
        guard zeros.shape[0] == out, scales.shape == [out, 8 * zw], zeros.dtype == .i32, scales.dtype.isSupportedFloat,
              let group = groups.first(where: { $0 > 0 && inFeatures % $0 == 0 && zerosWidth($0) == zw }) else {
            throw TensorIOError.invalidTensor(name: qweight.name, reason: "AWQ gemv: qweight \(qweight.shape), qzeros \(zeros.shape), scales \(scales.shape) do not fit [out, in/8], [out, zw], [out, 8·zw] for group 32, 64 or 128")
        }
        return Logical(name: prefix + ".weight", shape: [out, inFeatures], storage: "AWQ gemv int4 g\(group)", scheme: .awqGEMV(group: group),
                       parts: ["qweight": qweight, "zeros": zeros, "scales": scales])
    }

    /// compressed-tensors' FP4 containers: `nvfp4-pack-quantized` (E4M3 `weight_scale` [out, in/16] and an F32
    /// `weight_global_scale`) and `mxfp4-pack-quantized` (U8 E8M0 `weight_scale` [out, in/32]).
    static func packedFP4(packed: ModelTensor, scale: ModelTensor, global: ModelTensor?, prefix: String) throws -> Logical {
        let rows = packed.shape[0], cols = packed.shape[1] * 2
        var parts = ["packed": packed, "scale": scale]
        let nvfp4: Bool
        if scale.dtype == .f8E4M3, let global, global.shape.reduce(1, *) == 1, global.dtype.isSupportedFloat, scale.shape == [rows, cols / 16], cols % 16 == 0 {
            nvfp4 = true
            parts["global"] = global
        } else if scale.dtype == .u8, global == nil, cols % 32 == 0, scale.shape == [rows, cols / 32] {
            nvfp4 = false
        } else {
            throw TensorIOError.invalidTensor(name: packed.name, reason: "FP4 weight_packed \(packed.shape) with weight_scale \(scale.shape) \(scale.dtype.rawValue)\(global == nil ? "" : " and a global scale") fits neither NVFP4 (E4M3 scales per 16 and one F32 global scale) nor MXFP4 (U8 exponents per 32)")
        }
        return Logical(name: prefix + ".weight", shape: [rows, cols], storage: nvfp4 ? "compressed-tensors NVFP4 g16" : "compressed-tensors MXFP4 g32",
                       scheme: .packedFP4(nvfp4: nvfp4), parts: parts)
    }

    /// HQQ (`HQQLinear.state_dict()`, as hqq's `save_to_safetensors` and transformers 4.x write it): every setting is
    /// a tensor of its own beside `W_q` (0-d integers, strings as U8 bytes).
    static func hqq(weight: ModelTensor, prefix: String, names: [String: ModelTensor], model: SafetensorsModel) throws -> Logical {
        func integer(_ field: String) -> Int? {
            guard let t = names[prefix + "." + field], t.shape.reduce(1, *) == 1 else { return nil }
            return model.withBytes(of: t) { raw -> Int? in
                switch t.dtype {
                case .i32: return Int(raw.loadUnaligned(as: Int32.self).littleEndian)
                case .i64: return Int(exactly: raw.loadUnaligned(as: Int64.self).littleEndian)
                case .u8, .bool: return Int(raw[0])
                default: return nil
                }
            }
        }
        func text(_ field: String) -> String? {
            guard let t = names[prefix + "." + field], t.dtype == .u8, t.shape.count == 1, t.shape[0] <= 64 else { return nil }
            return model.withBytes(of: t) { String(decoding: $0, as: UTF8.self) }
        }
        let shapeTensor = names[prefix + ".shape"]!, scale = names[prefix + ".scale"]!, zero = names[prefix + ".zero"]!
        guard shapeTensor.shape.reduce(1, *) == 2, shapeTensor.dtype == .i64 || shapeTensor.dtype == .i32 else {
            throw TensorIOError.invalidTensor(name: shapeTensor.name, reason: "HQQ shape must be two integers, found \(shapeTensor.shape) \(shapeTensor.dtype.rawValue)")
        }
        let dims: [Int] = model.withBytes(of: shapeTensor) { raw in
            shapeTensor.dtype == .i64 ? (0..<2).map { Int(clamping: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self).littleEndian) }
                                      : (0..<2).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self).littleEndian) } }
        guard let bits = integer("nbits"), let group = integer("group_size"), let axis = integer("axis"), let packing = text("packing") else {
            throw TensorIOError.invalidTensor(name: weight.name, reason: "HQQ W_q without nbits, group_size, axis and packing beside it")
        }
        let (count, overflow) = dims[0].multipliedReportingOverflow(by: dims[1])
        guard dims.allSatisfy({ $0 > 0 }), !overflow, group > 0, count % group == 0, axis == 0 || axis == 1 else {
            throw TensorIOError.invalidTensor(name: weight.name, reason: "HQQ shape \(dims) with group \(group) and axis \(axis) is not a whole number of groups")
        }
        if integer("view_as_float") == 1 || integer("quant_scale") == 1 || integer("quant_zero") == 1 || integer("offload_meta") == 1 {
            throw TensorIOError.invalidTensor(name: weight.name, reason: "HQQ with view_as_float, quantized scales/zeros or offloaded meta is not read; save it with those off")
        }
        // The quantized matrix Q: [count/group, group] grouped by rows (axis 1) or [group, count/group] by columns (axis 0).
        let layout = HQQLayout(rows: axis == 1 ? count / group : group, cols: axis == 1 ? group : count / group, byRows: axis == 1, bits: bits, packing: packing)
        let groupsCount = count / group
        guard let packedRows = layout.packedRows, weight.shape == [packedRows, layout.cols], weight.dtype == .u8,
              scale.shape.reduce(1, *) == groupsCount, zero.shape.reduce(1, *) == groupsCount, scale.dtype.isSupportedFloat, zero.dtype.isSupportedFloat else {
            throw TensorIOError.invalidTensor(name: weight.name, reason: "HQQ \(packing) \(bits)-bit W_q \(weight.shape) \(weight.dtype.rawValue) with scale \(scale.shape) and zero \(zero.shape) does not fit \(dims) in groups of \(group) (packings 8bit_u8, 4bit_u8, 2bit_u8, 1bit_u8 are read)")
        }
        var parts = ["qweight": weight, "scale": scale, "zero": zero]
        for t in model.tensors where t.name.hasPrefix(prefix + ".") && !t.name.hasSuffix(".bias") {
            let field = String(t.name.dropFirst(prefix.count + 1))
            if !field.contains(".") && parts.values.allSatisfy({ $0.name != t.name }) { parts["meta." + field] = t }
        }
        return Logical(name: prefix + ".weight", shape: dims, storage: "HQQ \(bits)-bit g\(group)", scheme: .hqq(layout), parts: parts)
    }

    static func packQuantized(packed: ModelTensor, scale: ModelTensor, shape: ModelTensor?, zero: ModelTensor?, prefix: String,
                              model: SafetensorsModel) throws -> Logical {
        let rows = packed.shape[0]
        var cols = 0
        if let shape, shape.shape.reduce(1, *) == 2, [.i32, .i64].contains(shape.dtype) {
            let dims: [Int] = model.withBytes(of: shape) { raw in
                shape.dtype == .i64 ? (0..<2).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self).littleEndian) }
                                    : (0..<2).map { Int(raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self).littleEndian) } }
            guard dims[0] == rows, dims[1] > 0 else {
                throw TensorIOError.invalidTensor(name: shape.name, reason: "weight_shape \(dims) does not match \(rows) packed rows")
            }
            cols = dims[1]
        }
        guard scale.shape.count == 2, scale.shape[0] == rows, scale.dtype.isSupportedFloat, scale.shape[1] > 0 else {
            throw TensorIOError.invalidTensor(name: scale.name, reason: "weight_scale must be [\(rows), groups] floats, found \(scale.shape)")
        }
        if cols == 0 { cols = packed.shape[1] * 8 }
        let bits = [4, 8].first { (cols * $0 + 31) / 32 == packed.shape[1] } ?? 0
        guard bits > 0, cols % scale.shape[1] == 0 || scale.shape[1] == 1 else {
            throw TensorIOError.invalidTensor(name: packed.name, reason: "\(packed.shape[1]) packed words a row fit neither 4 nor 8 bits for \(cols) columns")
        }
        let group = scale.shape[1] == 1 ? cols : cols / scale.shape[1]
        var parts = ["packed": packed, "scale": scale]
        if let zero {
            // Asymmetric: zero points packed along the output dimension, [⌈out·bits/32⌉, groups] words, stored z + 2^(bits−1).
            guard zero.dtype == .i32, zero.shape == [(rows * bits + 31) / 32, scale.shape[1]] else {
                throw TensorIOError.invalidTensor(name: zero.name, reason: "weight_zero_point \(zero.shape) \(zero.dtype.rawValue) is not I32 [\((rows * bits + 31) / 32), \(scale.shape[1])] (zero points packed along the output dimension)")
            }
            parts["zero"] = zero
        }
        return Logical(name: prefix + ".weight", shape: [rows, cols], storage: "compressed-tensors pack-quantized int\(bits) g\(group)\(zero == nil ? "" : " asymmetric")",
                       scheme: .packQuantized(bits: bits, group: group, zeroPacked: zero != nil), parts: parts)
    }

    // MARK: Decoding

    private func floats(_ l: Logical, _ part: String) throws -> [Float] { try base.floats(of: l.parts[part]!) }

    private func decodeMLX(_ l: Logical, bits: Int, group: Int) throws -> [Float] {
        let rows = l.shape[0], cols = l.shape[1], words = l.parts["weight"]!.shape[1], groups = cols / group
        let scales = try floats(l, "scales"), biases = try floats(l, "biases")
        var out = [Float](repeating: 0, count: rows * cols)
        let mask = UInt64((1 << bits) - 1)
        base.withBytes(of: l.parts["weight"]!) { raw in
            out.withUnsafeMutableBufferPointer { o in
                for r in 0..<rows {
                    let row = r * words * 4
                    func word(_ w: Int) -> UInt64 {
                        guard w < words else { return 0 }
                        let p = row + w * 4
                        return UInt64(raw[p]) | UInt64(raw[p + 1]) << 8 | UInt64(raw[p + 2]) << 16 | UInt64(raw[p + 3]) << 24
                    }
                    for c in 0..<cols {
                        let bit = c * bits, w = bit >> 5, shift = bit & 31
                        let q = Float(((word(w) | word(w + 1) << 32) >> UInt64(shift)) & mask)
                        let g = r * groups + c / group
                        o[r * cols + c] = scales[g] * q + biases[g]
                    }
                }
            }
        }
        return out
    }

    /// MLX's microscaled modes: the element of code `q` times the scale of its group.
    private func decodeMLXMicroscaled(_ l: Logical, mode: MLXMicroscaling) throws -> [Float] {
        let rows = l.shape[0], cols = l.shape[1], words = l.parts["weight"]!.shape[1], groups = cols / mode.group
        let scaleCodes = base.withBytes(of: l.parts["scales"]!) { Array($0) }
        let scales = scaleCodes.map { mode == .nvfp4 ? Self.e4m3[Int($0)] : Self.e8m0[Int($0)] }
        let elements = mode.bits == 4 ? Self.e2m1 : Self.e4m3
        let mask = UInt64((1 << mode.bits) - 1)
        var out = [Float](repeating: 0, count: rows * cols)
        base.withBytes(of: l.parts["weight"]!) { raw in
            out.withUnsafeMutableBufferPointer { o in
                for r in 0..<rows {
                    let row = r * words * 4
                    func word(_ w: Int) -> UInt64 {
                        let p = row + w * 4
                        return UInt64(raw[p]) | UInt64(raw[p + 1]) << 8 | UInt64(raw[p + 2]) << 16 | UInt64(raw[p + 3]) << 24
                    }
                    for c in 0..<cols {
                        let bit = c * mode.bits
                        let q = Int((word(bit >> 5) >> UInt64(bit & 31)) & mask) // elements never straddle a word
                        o[r * cols + c] = elements[q] * scales[r * groups + c / mode.group]
                    }
                }
            }
        }
        return out
    }

    /// FP4 E2M1 (1 sign, 2 exponent, 1 mantissa bits): 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives.
    static let e2m1: [Float] = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]
    /// E8M0 scales: 2^(s − 127); 255 is NaN.
    static let e8m0: [Float] = (0..<256).map { $0 == 255 ? .nan : Float(sign: .plus, exponent: $0 - 127, significand: 1) }

    private func decodeBnb4(_ l: Logical, blocksize: Int, nestedBlocksize: Int?, nestedOffset: Float) throws -> [Float] {
        let count = l.shape[0] * l.shape[1]
        let map = try floats(l, "map")
        var absmax: [Float]
        if let nb = nestedBlocksize {
            let nestedMap = try floats(l, "nestedMap"), nestedAbs = try floats(l, "nestedAbsmax")
            let codes = base.withBytes(of: l.parts["absmax"]!) { Array($0) }
            absmax = codes.enumerated().map { i, q in nestedMap[Int(q)] * nestedAbs[i / nb] + nestedOffset }
        } else {
            absmax = try floats(l, "absmax")
        }
        var out = [Float](repeating: 0, count: count)
        base.withBytes(of: l.parts["weight"]!) { raw in
            for e in 0..<count {
                let byte = raw[e >> 1]
                let q = (e & 1) == 0 ? Int(byte >> 4) : Int(byte & 0x0F)
                out[e] = map[q] * absmax[e / blocksize]
            }
        }
        return out
    }

    private func int32s(_ t: ModelTensor) -> [UInt32] {
        base.withBytes(of: t) { raw in (0..<(raw.count / 4)).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self).littleEndian } }
    }

    /// Code `j` of a stream of `bits`-bit codes, least significant bit first, over the words `word(0)`, `word(1)`, …
    /// (a 3-bit code may straddle two words).
    @inline(__always) static func streamCode(_ j: Int, bits: Int, _ word: (Int) -> UInt32) -> UInt32 {
        let bit = j * bits, w = bit >> 5, shift = bit & 31
        var v = UInt64(word(w)) >> UInt64(shift)
        if shift + bits > 32 { v |= UInt64(word(w + 1)) << UInt64(32 - shift) }
        return UInt32(truncatingIfNeeded: v & ((1 << UInt64(bits)) - 1))
    }

    /// GPTQ: column n's codes are one stream down `qweight[·, n]`; group g's zeros one stream along `qzeros[g, ·]`.
    private func decodeGPTQ(_ l: Logical, bits: Int, zeroPlusOne: Bool) throws -> [Float] {
        let out = l.shape[0], inFeatures = l.shape[1]
        let q = int32s(l.parts["qweight"]!), z = int32s(l.parts["zeros"]!), scales = try floats(l, "scales")
        let g = int32s(l.parts["gidx"]!).map { Int(Int32(bitPattern: $0)) }
        let groups = l.parts["scales"]!.shape[0], zeroWords = l.parts["zeros"]!.shape[1]
        var zeros = [Float](repeating: 0, count: groups * out)
        for group in 0..<groups {
            for n in 0..<out {
                zeros[group * out + n] = Float(Self.streamCode(n, bits: bits) { z[group * zeroWords + $0] }) + (zeroPlusOne ? 1 : 0)
            }
        }
        var w = [Float](repeating: 0, count: out * inFeatures)
        for k in 0..<inFeatures {
            let group = g[k]
            guard (0..<groups).contains(group) else { throw TensorIOError.invalidTensor(name: l.parts["gidx"]!.name, reason: "g_idx[\(k)] = \(group) is not a group (0…\(groups - 1))") }
            for n in 0..<out {
                let code = Float(Self.streamCode(k, bits: bits) { q[$0 * out + n] })
                w[n * inFeatures + k] = scales[group * out + n] * (code - zeros[group * out + n])
            }
        }
        return w
    }

    /// AWQ gemv: row n's codes in natural nibble order along `qweight[n, ·]`, its zeros along `qzeros[n, ·]`.
    private func decodeAWQGEMV(_ l: Logical, group: Int) throws -> [Float] {
        let out = l.shape[0], inFeatures = l.shape[1], words = inFeatures / 8
        let q = int32s(l.parts["qweight"]!), z = int32s(l.parts["zeros"]!), scales = try floats(l, "scales")
        let zw = l.parts["zeros"]!.shape[1], scaleCols = l.parts["scales"]!.shape[1]
        var w = [Float](repeating: 0, count: out * inFeatures)
        for n in 0..<out {
            for k in 0..<inFeatures {
                let g = k / group
                let code = Float((q[n * words + k / 8] >> UInt32(4 * (k % 8))) & 0xF)
                let zero = Float((z[n * zw + g / 8] >> UInt32(4 * (g % 8))) & 0xF)
                w[n * inFeatures + k] = (code - zero) * scales[n * scaleCols + g]
            }
        }
        return w
    }

    /// AWQ's nibble i of a word holds column 8c + order[i].
    static let awqOrder = [0, 2, 4, 6, 1, 3, 5, 7]

    private func decodeAWQ(_ l: Logical, group: Int) throws -> [Float] {
        let out = l.shape[0], inFeatures = l.shape[1], words = out / 8
        let q = int32s(l.parts["qweight"]!), z = int32s(l.parts["zeros"]!), scales = try floats(l, "scales")
        var w = [Float](repeating: 0, count: out * inFeatures)
        for k in 0..<inFeatures {
            let g = k / group
            for c in 0..<words {
                let qw = q[k * words + c], zw = z[g * words + c]
                for i in 0..<8 {
                    let n = 8 * c + Self.awqOrder[i], shift = UInt32(4 * i)
                    w[n * inFeatures + k] = (Float((qw >> shift) & 0xF) - Float((zw >> shift) & 0xF)) * scales[g * out + n]
                }
            }
        }
        return w
    }

    private func decodePackQuantized(_ l: Logical, bits: Int, group: Int, zeroPacked: Bool) throws -> [Float] {
        let rows = l.shape[0], cols = l.shape[1], words = l.parts["packed"]!.shape[1], perWord = 32 / bits
        let mask = UInt32((1 << bits) - 1), offset = Float(1 << (bits - 1))
        let p = int32s(l.parts["packed"]!), scale = try floats(l, "scale"), groups = l.parts["scale"]!.shape[1]
        // Stored codes are q + 2^(bits−1) and z + 2^(bits−1): w = (q − z)·s, the offsets cancel.
        var zero = [Float](repeating: offset, count: rows * groups)
        if zeroPacked {
            let z = int32s(l.parts["zero"]!)
            for g in 0..<groups { for r in 0..<rows { zero[r * groups + g] = Float(Self.streamCode(r, bits: bits) { z[$0 * groups + g] }) } }
        }
        var w = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            for c in 0..<cols {
                let code = Float((p[r * words + c / perWord] >> UInt32((c % perWord) * bits)) & mask)
                let g = r * groups + min(groups - 1, c / group)
                w[r * cols + c] = (code - zero[g]) * scale[g]
            }
        }
        return w
    }

    /// compressed-tensors FP4: element 2j in the low nibble of byte j; NVFP4 w = e2m1 · (e4m3 scale / global scale)
    /// (the division first, in F32, as the library computes it), MXFP4 w = e2m1 · 2^(e − 127).
    private func decodePackedFP4(_ l: Logical, nvfp4: Bool) throws -> [Float] {
        let rows = l.shape[0], cols = l.shape[1], group = nvfp4 ? 16 : 32, groups = cols / group
        let global = nvfp4 ? try floats(l, "global")[0] : 1
        let scales = base.withBytes(of: l.parts["scale"]!) { raw in raw.map { nvfp4 ? Self.e4m3[Int($0)] / global : Self.e8m0[Int($0)] } }
        var out = [Float](repeating: 0, count: rows * cols)
        base.withBytes(of: l.parts["packed"]!) { raw in
            for r in 0..<rows {
                for c in 0..<cols {
                    let byte = raw[r * (cols / 2) + c / 2]
                    let code = c & 1 == 0 ? Int(byte & 0x0F) : Int(byte >> 4)
                    out[r * cols + c] = Self.e2m1[code] * scales[r * groups + c / group]
                }
            }
        }
        return out
    }

    /// HQQ: Q[r, c] = (code − zero[g]) · scale[g], g the group of (r, c); Q row-major is the weight row-major.
    private func decodeHQQ(_ l: Logical, _ layout: HQQLayout) throws -> [Float] {
        let scale = try floats(l, "scale"), zero = try floats(l, "zero")
        var out = [Float](repeating: 0, count: layout.rows * layout.cols)
        base.withBytes(of: l.parts["qweight"]!) { raw in
            for r in 0..<layout.rows {
                for c in 0..<layout.cols {
                    let g = layout.byRows ? r : c
                    out[r * layout.cols + c] = (Float(layout.code(raw, r, c)) - zero[g]) * scale[g]
                }
            }
        }
        return out
    }

    private func decodeInt8(_ l: Logical) throws -> [Float] {
        let rows = l.shape[0], cols = l.shape[1]
        let scb = try floats(l, "scb")
        var out = [Float](repeating: 0, count: rows * cols)
        base.withBytes(of: l.parts["weight"]!) { raw in
            for r in 0..<rows {
                let s = scb[r] / 127
                for c in 0..<cols { out[r * cols + c] = Float(Int8(bitPattern: raw[r * cols + c])) * s }
            }
        }
        return out
    }

    /// E4M3 "fn" (no infinities; S.1111.111 is NaN): bias 7, subnormals below exponent 1.
    static let e4m3: [Float] = (0..<256).map { b in
        let sign: Float = b & 0x80 != 0 ? -1 : 1
        let e = (b >> 3) & 0x0F, m = b & 0x07
        if e == 0x0F && m == 0x07 { return .nan }
        if e == 0 { return sign * Float(m) / 8 * pow(2, -6) }
        return sign * (1 + Float(m) / 8) * pow(2, Float(e - 7))
    }

    private func decodeFP8(_ l: Logical, block: (rows: Int, cols: Int)?) throws -> [Float] {
        let rows = l.shape[0], cols = l.shape[1]
        let scale = l.parts["scale"] == nil ? [Float(1)] : try floats(l, "scale")
        let gridCols = block.map { (cols + $0.cols - 1) / $0.cols } ?? 1
        var out = [Float](repeating: 0, count: rows * cols)
        base.withBytes(of: l.parts["weight"]!) { raw in
            for r in 0..<rows {
                for c in 0..<cols {
                    let s = block.map { scale[(r / $0.rows) * gridCols + c / $0.cols] } ?? 1
                    out[r * cols + c] = Self.e4m3[Int(raw[r * cols + c])] * s
                }
            }
        }
        return out
    }
}

/// MLX's microscaled quantization modes (`mx.quantize(…, mode:)`), told apart by bits × group, which the shapes give.
enum MLXMicroscaling: String, Sendable {
    case mxfp4, nvfp4, mxfp8

    var bits: Int { self == .mxfp8 ? 8 : 4 }
    var group: Int { self == .nvfp4 ? 16 : 32 }

    /// The mode of a U32 weight `[out, words]` with U8 scales `[out, groups]`.
    init(weight: ModelTensor, scales: ModelTensor) throws(TensorIOError) {
        let rows = weight.shape[0], words = weight.shape[1]
        guard scales.shape.count == 2, scales.shape[0] == rows, scales.shape[1] > 0 else {
            throw .invalidTensor(name: scales.name, reason: "MLX scales \(scales.shape) must be [\(rows), groups] for the weight \(weight.shape)")
        }
        let groups = scales.shape[1]
        // bits × group = 32 · words / groups: 128 (mxfp4), 64 (nvfp4) or 256 (mxfp8).
        let (bitsTimesGroupTimesGroups, overflow) = words.multipliedReportingOverflow(by: 32)
        guard !overflow, bitsTimesGroupTimesGroups % groups == 0,
              let mode = [MLXMicroscaling.mxfp4, .nvfp4, .mxfp8].first(where: { $0.bits * $0.group == bitsTimesGroupTimesGroups / groups }) else {
            throw .invalidTensor(name: weight.name, reason: "MLX weight \(weight.shape) with U8 scales \(scales.shape) and no biases fits none of the modes mxfp4, nvfp4, mxfp8")
        }
        self = mode
    }
}

/// HQQ's quantized matrix and its byte packing (hqq's `Quantizer.pack`): `packing` "Nbit_u8" stores 8/N row slices
/// of the matrix in one byte each, slice s in bits 8 − (s + 1)·N ..< 8 − s·N (the first slice highest).
struct HQQLayout: Sendable {
    var rows: Int, cols: Int, byRows: Bool, bits: Int, packing: String

    /// Bits a packed code takes (8 for "8bit_u8", which hqq also uses for 5 and 6 bits), or nil for other packings.
    var width: Int? { ["8bit_u8": 8, "4bit_u8": 4, "2bit_u8": 2, "1bit_u8": 1][packing].flatMap { bits <= $0 ? $0 : nil } }
    /// Rows of `W_q`, or nil when the packing is not read or does not divide the rows.
    var packedRows: Int? {
        guard let w = width, rows % (8 / w) == 0 else { return nil }
        return rows / (8 / w)
    }
    func code(_ raw: UnsafeRawBufferPointer, _ r: Int, _ c: Int) -> UInt8 {
        let w = width!, slice = rows / (8 / w)
        let byte = raw[(r % slice) * cols + c]
        return (byte >> UInt8(8 - (r / slice + 1) * w)) & UInt8((1 << w) - 1)
    }
}


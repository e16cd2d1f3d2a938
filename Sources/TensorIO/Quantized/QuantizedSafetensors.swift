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
        /// compressed-tensors pack-quantized (`weight_packed` [out, in·bits/32], stored unsigned = signed + 2^(bits−1)).
        case packQuantized(bits: Int, group: Int)
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
        for l in logical.values { if let a = l.parts["weight"] ?? l.parts["qweight"] ?? l.parts["packed"] { anchored[a.name] = l } }
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
        case let .packQuantized(bits, group): return try decodePackQuantized(l, bits: bits, group: group)
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
        let configured = config?["bits"] as? Int
        let bits = configured ?? (inFeatures > 0 && (qweight.shape[0] * 32) % inFeatures == 0 ? qweight.shape[0] * 32 / inFeatures : 4)
        guard [2, 4, 8].contains(bits), qweight.shape[1] == out, let g = gIdx, g.dtype == .i32, qweight.shape[0] * 32 == inFeatures * bits,
              zeros.shape == [groups, out * bits / 32] else {
            throw TensorIOError.invalidTensor(name: qweight.name, reason: "GPTQ: qweight \(qweight.shape), qzeros \(zeros.shape), scales \(scales.shape), g_idx \(gIdx?.shape ?? []) do not fit \(bits)-bit packing (2, 4 and 8 bits are read; 3-bit is not)")
        }
        let v2 = ((config?["checkpoint_format"] as? String) ?? "gptq").lowercased() == "gptq_v2"
        return Logical(name: prefix + ".weight", shape: [out, inFeatures], storage: "GPTQ int\(bits)\(v2 ? " (v2 zeros)" : "")", scheme: .gptq(bits: bits, zeroPlusOne: !v2),
                       parts: ["qweight": qweight, "zeros": zeros, "scales": scales, "gidx": g])
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
        if zero != nil {
            throw TensorIOError.invalidTensor(name: packed.name, reason: "asymmetric pack-quantized weights (weight_zero_point) are not read yet")
        }
        let group = scale.shape[1] == 1 ? cols : cols / scale.shape[1]
        return Logical(name: prefix + ".weight", shape: [rows, cols], storage: "compressed-tensors pack-quantized int\(bits) g\(group)",
                       scheme: .packQuantized(bits: bits, group: group), parts: ["packed": packed, "scale": scale])
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

    private func decodeGPTQ(_ l: Logical, bits: Int, zeroPlusOne: Bool) throws -> [Float] {
        let out = l.shape[0], inFeatures = l.shape[1], perWord = 32 / bits, mask = UInt32((1 << bits) - 1)
        let q = int32s(l.parts["qweight"]!), z = int32s(l.parts["zeros"]!), scales = try floats(l, "scales")
        let g = int32s(l.parts["gidx"]!).map { Int(Int32(bitPattern: $0)) }
        let groups = l.parts["scales"]!.shape[0], zeroWords = l.parts["zeros"]!.shape[1]
        var w = [Float](repeating: 0, count: out * inFeatures)
        for k in 0..<inFeatures {
            let group = g[k]
            guard (0..<groups).contains(group) else { throw TensorIOError.invalidTensor(name: l.parts["gidx"]!.name, reason: "g_idx[\(k)] = \(group) is not a group (0…\(groups - 1))") }
            let row = (k / perWord) * out, shift = UInt32((k % perWord) * bits)
            for n in 0..<out {
                let code = Float((q[row + n] >> shift) & mask)
                let zw = z[group * zeroWords + n / perWord], zero = Float((zw >> UInt32((n % perWord) * bits)) & mask) + (zeroPlusOne ? 1 : 0)
                w[n * inFeatures + k] = scales[group * out + n] * (code - zero)
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

    private func decodePackQuantized(_ l: Logical, bits: Int, group: Int) throws -> [Float] {
        let rows = l.shape[0], cols = l.shape[1], words = l.parts["packed"]!.shape[1], perWord = 32 / bits
        let mask = UInt32((1 << bits) - 1), offset = Float(1 << (bits - 1))
        let p = int32s(l.parts["packed"]!), scale = try floats(l, "scale"), groups = l.parts["scale"]!.shape[1]
        var w = [Float](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            for c in 0..<cols {
                let code = Float((p[r * words + c / perWord] >> UInt32((c % perWord) * bits)) & mask)
                w[r * cols + c] = (code - offset) * scale[r * groups + min(groups - 1, c / group)]
            }
        }
        return w
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

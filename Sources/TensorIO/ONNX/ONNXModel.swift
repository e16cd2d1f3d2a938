import Foundation

/// An ONNX model (`.onnx` ModelProto, external data files too) read as the weight matrices it stands for.
///
/// Initializers are parsed straight from the protobuf (ProtobufReader, every length checked). A matrix a MatMul
/// multiplies by is listed in the Hugging Face orientation ([out, in]) under a Hugging Face name derived from its
/// node's path when the exporter left it an anonymous `onnx::MatMul_N` (`/encoder/layer.0/attention/self/query/MatMul`
/// → `encoder.layer.0.attention.self.query.weight`). Quantized weights are dequantized as onnxruntime computes them:
/// `DequantizeLinear` (per tensor, per axis, blocked), `MatMulNBits` (com.microsoft; 2–8 bits, blocks, zero points,
/// `g_idx`) and the `MatMulInteger` weights of `quantize_dynamic` (scale `NAME_scale`, zero point).
/// Weights in any other form are listed as not decodable, so coverage counts them as unread.
/// Sendable: immutable after init but for `externalFiles`, which is read and written only under `lock`.
public final class ONNXModel: TensorSource, @unchecked Sendable {
    public let path: String
    public let sourceTensors: [SourceTensor]
    private let tensorIndex: [String: Int]
    let mapping: MappedFile
    let initializers: [String: Initializer]
    private let logical: [String: Logical]
    private let lock = NSLock()
    private var externalFiles: [String: MappedFile] = [:]

    /// Largest element count of one initializer (2³⁴: 64 GiB of f32), checked before anything is allocated.
    public static let maximumElements = 1 << 34

    enum DataRef {
        /// raw_data: a byte range of the main file.
        case raw(Range<Int>)
        /// external data: (validated) file, offset, length.
        case external(file: String, offset: Int, length: Int)
        /// float_data (packed fixed32), double_data (packed fixed64), int32_data/int64_data (packed varints).
        case floats(Range<Int>), doubles(Range<Int>), varints(Range<Int>)
        case none
    }

    struct Initializer {
        var name: String
        var dims: [Int]
        var dataType: Int
        var data: DataRef
        var count: Int
    }

    struct Node {
        var opType: String
        var domain: String
        var name: String
        var inputs: [String]
        var outputs: [String]
        var ints: [String: Int64]
        var intLists: [String: [Int64]]
    }

    enum Kind {
        case float(String, transpose: Bool)
        case dequantizeLinear(x: String, scale: String, zeroPoint: String?, axis: Int, block: Int, transpose: Bool)
        case matMulNBits(b: String, scales: String, zeroPoints: String?, gIdx: String?, k: Int, n: Int, bits: Int, block: Int)
        case matMulInteger(w: String, scale: String, zeroPoint: String?)
    }

    struct Logical {
        var name: String
        var shape: [Int]
        var storage: String
        var kind: Kind
    }

    // MARK: Opening

    public convenience init(path: String) throws {
        try self.init(mapping: try MappedFile(path: path), folder: (path as NSString).deletingLastPathComponent, externalData: true)
    }

    /// Parses ONNX bytes held in memory (the fuzz target's entry): external data is refused, nothing else is opened.
    public convenience init(bytes: UnsafeRawBufferPointer, path: String) throws {
        try self.init(mapping: MappedFile(copying: bytes, path: path), folder: "", externalData: false)
    }

    private init(mapping: MappedFile, folder: String, externalData: Bool) throws {
        path = mapping.path
        self.mapping = mapping
        let parsed: (initializers: [Initializer], nodes: [Node])
        do {
            parsed = try mapping.withBytes { bytes throws(ProtobufReader.Failure) in try Self.parseModel(bytes, folder: folder) }
        } catch {
            throw TensorIOError.invalidONNX(path: path, reason: "\(error)")
        }
        guard !parsed.initializers.isEmpty else {
            throw TensorIOError.invalidONNX(path: path, reason: "the graph holds no initializers, so there are no weights to read (an ONNX file that keeps its weights elsewhere is not supported)")
        }
        var inits: [String: Initializer] = [:]
        for i in parsed.initializers {
            // ONNX names are unique in a graph; two initializers of one name would make a tensor read as the other.
            guard inits.updateValue(i, forKey: i.name) == nil else {
                throw TensorIOError.invalidONNX(path: path, reason: "two initializers are named \"\(i.name)\" (names are unique in a graph)")
            }
        }
        initializers = inits
        let (logical, order, unreadable) = Self.logicalTensors(initializers: parsed.initializers, byName: inits, nodes: parsed.nodes)
        self.logical = logical
        var list: [SourceTensor] = []
        for name in order {
            let l = logical[name]!
            list.append(SourceTensor(name: l.name, shape: l.shape, storage: l.storage, isFloating: true))
        }
        for (name, shape, storage) in unreadable { list.append(SourceTensor(name: name, shape: shape, storage: storage, isFloating: false)) }
        sourceTensors = list
        tensorIndex = Dictionary(list.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
        // External data files are checked now, so a missing or short one is an error at open.
        for i in parsed.initializers {
            if case let .external(file, offset, length) = i.data {
                guard externalData else { throw TensorIOError.invalidONNX(path: path, reason: "\(i.name) points to external data, which is not read from memory") }
                let m = try externalFile(file)
                guard offset >= 0, length >= 0, offset <= m.size, length <= m.size - offset else {
                    throw TensorIOError.invalidTensor(name: i.name, reason: "external data \(file) holds \(m.size) bytes; offset \(offset) + length \(length) runs past it")
                }
            }
        }
    }

    /// Initializers in the graph.
    public var initializerCount: Int { initializers.count }

    /// External data files the initializers point to, sorted.
    public var externalDataFiles: [String] {
        Set(initializers.values.compactMap { if case let .external(file, _, _) = $0.data { return file } else { return nil } }).sorted()
    }

    public func sourceTensor(named name: String) -> SourceTensor? { tensorIndex[name].map { sourceTensors[$0] } }

    public func releaseTensor(named name: String) {}

    private func externalFile(_ file: String) throws -> MappedFile {
        lock.lock()
        defer { lock.unlock() }
        if let m = externalFiles[file] { return m }
        let m = try MappedFile(path: file)
        externalFiles[file] = m
        return m
    }

    // MARK: Decoding

    public func decodeFloats(named name: String) throws -> [Float] {
        guard let l = logical[name] else {
            if let t = sourceTensor(named: name) {
                throw TensorIOError.invalidTensor(name: name, reason: "stored as \(t.storage) in \(path), which WeightMark does not decode")
            }
            throw TensorIOError.tensorNotFound(name: name, path: path)
        }
        switch l.kind {
        case let .float(source, transpose):
            let i = initializers[source]!
            let v = try values(i)
            return transpose ? Self.transposed(v, rows: i.dims[0], cols: i.dims[1]) : v
        case let .dequantizeLinear(x, scale, zeroPoint, axis, block, transpose):
            let xi = initializers[x]!
            var v = try values(xi)
            let s = try values(initializers[scale]!)
            let z = try zeroPoint.map { try values(initializers[$0]!) }
            let dims = xi.dims
            let ax = axis < 0 ? axis + dims.count : axis
            guard block >= 0, block <= 1 << 30 else { throw TensorIOError.invalidTensor(name: name, reason: "DequantizeLinear block_size \(block) is out of range") }
            guard ax >= 0, ax < max(1, dims.count) else { throw TensorIOError.invalidTensor(name: name, reason: "DequantizeLinear axis \(axis) does not fit \(x)'s \(dims.count) dimensions") }
            let inner = dims.count > ax ? dims[(ax + 1)...].reduce(1, *) : 1
            let along = dims.count > ax ? dims[ax] : 1
            for idx in v.indices {
                var k = 0
                if s.count > 1 {
                    let a = (idx / inner) % along
                    let outer = idx / (inner * along)
                    if block > 0 {
                        let blocks = (along + block - 1) / block
                        k = (outer * blocks + a / block) * inner + idx % inner
                    } else {
                        k = a
                    }
                }
                guard k < s.count else { throw TensorIOError.invalidTensor(name: name, reason: "\(scale) has \(s.count) scales, too few for \(x)") }
                let zp = z.map { $0.isEmpty ? 0 : $0.count > 1 ? (k < $0.count ? $0[k] : 0) : $0[0] } ?? 0
                v[idx] = (v[idx] - zp) * s[k]
            }
            return transpose ? Self.transposed(v, rows: dims[0], cols: dims[1]) : v
        case let .matMulNBits(b, scales, zeroPoints, gIdx, k, n, bits, block):
            return try dequantizeNBits(name: name, b: b, scales: scales, zeroPoints: zeroPoints, gIdx: gIdx, k: k, n: n, bits: bits, block: block)
        case let .matMulInteger(w, scale, zeroPoint):
            let wi = initializers[w]!
            var v = try values(wi)
            let s = try values(initializers[scale]!)
            let z = try zeroPoint.map { try values(initializers[$0]!) }
            let cols = wi.dims[1]
            guard s.count == 1 || s.count == cols else {
                throw TensorIOError.invalidTensor(name: name, reason: "\(scale) has \(s.count) scales for \(cols) columns")
            }
            for idx in v.indices {
                let c = idx % cols
                let zp = z.map { $0.isEmpty ? 0 : $0.count > 1 ? (c < $0.count ? $0[c] : 0) : $0[0] } ?? 0
                v[idx] = (v[idx] - zp) * (s.count > 1 ? s[c] : s[0])
            }
            return Self.transposed(v, rows: wi.dims[0], cols: cols)
        }
    }

    private func dequantizeNBits(name: String, b: String, scales: String, zeroPoints: String?, gIdx: String?,
                                 k: Int, n: Int, bits: Int, block: Int) throws -> [Float] {
        let bi = initializers[b]!
        let blocks = (k + block - 1) / block
        let blob = block * bits / 8
        let packed = try rawBytes(bi)
        guard packed.count == n * blocks * blob else {
            throw TensorIOError.invalidTensor(name: name, reason: "\(b) holds \(packed.count) bytes; N \(n) × \(blocks) blocks × \(blob) bytes expected")
        }
        let s = try values(initializers[scales]!)
        guard s.count == n * blocks else { throw TensorIOError.invalidTensor(name: name, reason: "\(scales) has \(s.count) scales; \(n * blocks) expected") }
        var zeros: [Float]?
        var zeroBytes: [UInt8]?
        if let zeroPoints, let zi = initializers[zeroPoints] {
            if zi.dataType == 2 { zeroBytes = try rawBytes(zi) } else { zeros = try values(zi) }
        }
        let zpRow = (blocks * bits + 7) / 8
        if let zb = zeroBytes, zb.count < n * zpRow { throw TensorIOError.invalidTensor(name: name, reason: "\(zeroPoints!) is too short") }
        if let z = zeros, z.count < n * blocks { throw TensorIOError.invalidTensor(name: name, reason: "\(zeroPoints!) is too short") }
        var groups: [Int]?
        if let gIdx, let gi = initializers[gIdx] {
            let g = try values(gi).map { Int($0) }
            guard g.count >= k, g.allSatisfy({ $0 >= 0 && $0 < blocks }) else { throw TensorIOError.invalidTensor(name: name, reason: "\(gIdx) is not a valid group index") }
            groups = g
        }
        let mask = (1 << bits) - 1
        let defaultZero = Float(1 << (bits - 1))
        var out = [Float](repeating: 0, count: n * k)
        for row in 0..<n {
            for col in 0..<k {
                let g = groups?[col] ?? col / block
                let within = col % block
                let bit = within * bits
                let byteIndex = (row * blocks + col / block) * blob + bit / 8
                var q = Int(packed[byteIndex]) >> (bit % 8)
                if bit % 8 + bits > 8, byteIndex + 1 < packed.count { q |= Int(packed[byteIndex + 1]) << (8 - bit % 8) }
                q &= mask
                var zp = defaultZero
                if let zb = zeroBytes {
                    let zbit = g * bits
                    zp = Float((Int(zb[row * zpRow + zbit / 8]) >> (zbit % 8)) & mask)
                } else if let z = zeros {
                    zp = z[row * blocks + g]
                }
                out[row * k + col] = (Float(q) - zp) * s[row * blocks + g]
            }
        }
        return out
    }

    static func transposed(_ v: [Float], rows: Int, cols: Int) -> [Float] {
        var out = [Float](repeating: 0, count: v.count)
        for i in 0..<rows { for j in 0..<cols { out[j * rows + i] = v[i * cols + j] } }
        return out
    }

    static func elementSize(_ dataType: Int) -> Int? {
        switch dataType {
        case 1, 6: 4          // FLOAT, INT32
        case 2, 3: 1          // UINT8, INT8
        case 4, 5, 10, 16: 2  // UINT16, INT16, FLOAT16, BFLOAT16
        case 7, 11: 8         // INT64, DOUBLE
        default: nil
        }
    }

    static func typeName(_ dataType: Int) -> String {
        switch dataType {
        case 1: "F32"
        case 2: "U8"
        case 3: "I8"
        case 4: "U16"
        case 5: "I16"
        case 6: "I32"
        case 7: "I64"
        case 10: "F16"
        case 11: "F64"
        case 16: "BF16"
        case 17, 18, 19, 20: "FP8"
        case 21: "U4"
        case 22: "I4"
        case 23: "FP4"
        default: "ONNX type \(dataType)"
        }
    }

    /// An initializer's stored bytes (raw or external data; the element type's own little-endian layout).
    func rawBytes(_ i: Initializer) throws -> [UInt8] {
        switch i.data {
        case let .raw(r): return mapping.withBytes { Array($0[r]) }
        case let .external(file, offset, length):
            let m = try externalFile(file)
            return m.withBytes { Array($0[offset..<(offset + length)]) }
        case let .varints(r):
            // int32_data holding one element per varint (UINT8/INT8 zero points, FLOAT16 bit patterns).
            var out: [UInt8] = []
            try mapping.withBytes { bytes throws in
                var p = ProtobufReader(UnsafeRawBufferPointer(rebasing: bytes[r]), base: r.lowerBound)
                while !p.atEnd { out.append(UInt8(truncatingIfNeeded: try p.varint())) }
            }
            return out
        default:
            throw TensorIOError.invalidTensor(name: i.name, reason: "stored in a form that is not raw bytes")
        }
    }

    /// An initializer's elements as floats (integers as their values, float16/bfloat16 widened).
    func values(_ i: Initializer) throws -> [Float] {
        func decode(_ b: UnsafeRawBufferPointer) throws -> [Float] {
            guard let size = Self.elementSize(i.dataType) else {
                throw TensorIOError.invalidTensor(name: i.name, reason: "ONNX element type \(Self.typeName(i.dataType)) is not decoded")
            }
            guard b.count == i.count * size else {
                throw TensorIOError.invalidTensor(name: i.name, reason: "holds \(b.count) bytes; \(i.dims) of \(Self.typeName(i.dataType)) needs \(i.count * size)")
            }
            var out = [Float](repeating: 0, count: i.count)
            for k in 0..<i.count {
                let o = k * size
                switch i.dataType {
                case 1: out[k] = Float(bitPattern: b.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian)
                case 2: out[k] = Float(b[o])
                case 3: out[k] = Float(Int8(bitPattern: b[o]))
                case 4: out[k] = Float(b.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian)
                case 5: out[k] = Float(Int16(bitPattern: b.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian))
                case 6: out[k] = Float(Int32(bitPattern: b.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian))
                case 7: out[k] = Float(Int64(bitPattern: b.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian))
                case 10: out[k] = Float(Float16(bitPattern: b.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian))
                case 11: out[k] = Float(Double(bitPattern: b.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian))
                case 16: out[k] = FloatConversion.bf16ToFloat(b.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian)
                default: break
                }
            }
            return out
        }
        switch i.data {
        case let .raw(r):
            return try mapping.withBytes { bytes throws in try decode(UnsafeRawBufferPointer(rebasing: bytes[r])) }
        case let .external(file, offset, length):
            let m = try externalFile(file)
            return try m.withBytes { bytes throws in try decode(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)])) }
        case let .floats(r):
            guard r.count == i.count * 4 else { throw TensorIOError.invalidTensor(name: i.name, reason: "float_data holds \(r.count / 4) values, \(i.count) expected") }
            return mapping.withBytes { bytes in (0..<i.count).map { Float(bitPattern: bytes.loadUnaligned(fromByteOffset: r.lowerBound + 4 * $0, as: UInt32.self).littleEndian) } }
        case let .doubles(r):
            guard r.count == i.count * 8 else { throw TensorIOError.invalidTensor(name: i.name, reason: "double_data holds \(r.count / 8) values, \(i.count) expected") }
            return mapping.withBytes { bytes in (0..<i.count).map { Float(Double(bitPattern: bytes.loadUnaligned(fromByteOffset: r.lowerBound + 8 * $0, as: UInt64.self).littleEndian)) } }
        case let .varints(r):
            var out: [Float] = []
            out.reserveCapacity(i.count)
            try mapping.withBytes { bytes throws in
                var p = ProtobufReader(UnsafeRawBufferPointer(rebasing: bytes[r]), base: r.lowerBound)
                while !p.atEnd {
                    let v = try p.varint()
                    switch i.dataType {
                    case 10: out.append(Float(Float16(bitPattern: UInt16(truncatingIfNeeded: v))))
                    case 16: out.append(FloatConversion.bf16ToFloat(UInt16(truncatingIfNeeded: v)))
                    case 2, 4: out.append(Float(UInt32(truncatingIfNeeded: v)))
                    default: out.append(Float(Int64(bitPattern: v)))
                    }
                }
            }
            guard out.count == i.count else { throw TensorIOError.invalidTensor(name: i.name, reason: "holds \(out.count) values, \(i.count) expected") }
            return out
        case .none:
            if i.count == 0 { return [] }
            throw TensorIOError.invalidTensor(name: i.name, reason: "has no data")
        }
    }
}

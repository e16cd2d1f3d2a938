import Foundation
import Testing
@testable import TensorIO

/// The in-memory parsers (the entry points fuzz targets use): restricted unpickler, ZIP directory, tensor views,
/// .npy headers. No oracle needed.
@Suite("Container parsers on in-memory buffers")
struct ContainerParserTests {
    static func global(_ module: String, _ name: String) -> [UInt8] { Array("c\(module)\n\(name)\n".utf8) }
    static func unicode(_ s: String) -> [UInt8] {
        let b = Array(s.utf8)
        return [UInt8(ascii: "X")] + withUnsafeBytes(of: UInt32(b.count).littleEndian, Array.init) + b
    }
    static func binint1(_ v: UInt8) -> [UInt8] { [UInt8(ascii: "K"), v] }

    /// `OrderedDict({"w": _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 13), 2, (2, 5), (6, 1), False, OrderedDict()))}`
    /// as torch.save's pickler writes it (protocol 2, memo puts and gets).
    static let stateDict: [UInt8] = {
        var p: [UInt8] = [0x80, 2]
        p += global("collections", "OrderedDict") + [UInt8(ascii: "q"), 0, UInt8(ascii: ")"), UInt8(ascii: "R"), UInt8(ascii: "q"), 1]
        p += [UInt8(ascii: "(")] + unicode("w")
        p += global("torch._utils", "_rebuild_tensor_v2") + [UInt8(ascii: "(")]
        p += [UInt8(ascii: "(")] + unicode("storage") + global("torch", "FloatStorage") + unicode("0") + unicode("cpu") + binint1(13)
        p += [UInt8(ascii: "t"), UInt8(ascii: "Q")] + binint1(2)
        p += binint1(2) + binint1(5) + [0x86] + binint1(6) + binint1(1) + [0x86] + [0x89]
        p += [UInt8(ascii: "h"), 0, UInt8(ascii: ")"), UInt8(ascii: "R"), UInt8(ascii: "t"), UInt8(ascii: "R")]
        p += [UInt8(ascii: "u"), UInt8(ascii: ".")]
        return p
    }()

    @Test("a state-dict pickle yields the tensor view: storage, offset, shape, strides")
    func stateDictPickle() throws {
        let root = try Self.stateDict.withUnsafeBytes { try RestrictedUnpickler.unpickle($0) }
        let named = try StateDict.tensors(in: root)
        #expect(named.count == 1 && named[0].0 == "w")
        let t = named[0].1
        #expect(t.storage == PickleStorage(storageClass: "FloatStorage", key: "0", location: "cpu", elementCount: 13))
        #expect(t.storageOffset == 2 && t.shape == [2, 5] && t.strides == [6, 1])
        let view = try StridedTensor.validated(name: "w", dtype: .f32, shape: t.shape, strides: t.strides,
                                               storageOffset: t.storageOffset, storageElements: 13)
        #expect(!view.isRowMajorContiguous)
        let storage: [Float] = (0..<13).map(Float.init)
        let values = storage.withUnsafeBytes { view.decodeFloats(from: $0) }
        #expect(values == [2, 3, 4, 5, 6, 8, 9, 10, 11, 12])
    }

    @Test("globals outside the allowlist are refused by name, whatever opcode imports them",
          arguments: [("os", "system"), ("posix", "system"), ("nt", "system"), ("builtins", "eval"), ("builtins", "exec"),
                      ("builtins", "getattr"), ("__builtin__", "getattr"), ("torch", "load"), ("numpy.core.multiarray", "_reconstruct"),
                      ("collections", "defaultdict"), ("torch._utils", "_rebuild_qtensor")])
    func unsafeGlobals(module: String, name: String) {
        let viaGlobal: [UInt8] = [0x80, 2] + Self.global(module, name) + [UInt8(ascii: ".")]
        var viaStack: [UInt8] = [0x80, 4, 0x8C, UInt8(module.utf8.count)] + Array(module.utf8)
        viaStack += [0x8C, UInt8(name.utf8.count)] + Array(name.utf8) + [0x93, UInt8(ascii: ".")]
        let viaInst: [UInt8] = [0x80, 2, UInt8(ascii: "("), UInt8(ascii: "i")] + Array("\(module)\n\(name)\n".utf8) + [UInt8(ascii: ".")]
        for bytes in [viaGlobal, viaStack, viaInst] {
            #expect(throws: PickleError.self) { try bytes.withUnsafeBytes { try RestrictedUnpickler.unpickle($0) } }
            do {
                _ = try bytes.withUnsafeBytes { try RestrictedUnpickler.unpickle($0) }
            } catch let e as PickleError {
                #expect(e.description.contains("unsafe pickle: would import \(module).\(name)"))
            } catch {}
        }
    }

    @Test("LONG1 integers decode in two's complement, BINFLOAT big-endian, FRAME and MEMOIZE are accepted")
    func scalars() throws {
        let bytes: [UInt8] = [0x80, 4, 0x95] + [UInt8](repeating: 0, count: 8) + [UInt8(ascii: "(")]
            + [0x8A, 2, 0x00, 0xFF] + [0x94] + [0x8A, 1, 0xFF] + [0x8A, 0]
            + [UInt8(ascii: "G"), 0x3F, 0xF8, 0, 0, 0, 0, 0, 0] + [UInt8(ascii: "l"), UInt8(ascii: ".")]
        let v = try bytes.withUnsafeBytes { try RestrictedUnpickler.unpickle($0) }
        guard case let .list(l) = v else { Issue.record("not a list"); return }
        let ints = l.items.compactMap { if case let .int(i) = $0 { i } else { nil } }
        #expect(ints == [-256, -1, 0])
        if case let .float(f) = l.items[3] { #expect(f == 1.5) } else { Issue.record("no float") }
    }

    @Test("tensor views that leave their storage, or overflow, are refused",
          arguments: [([4, 4], [4, 1], 1, 16), ([4, 4], [5, 1], 0, 16), ([2, 3], [-3, 1], 3, 6), ([2, 3], [3, 1], -1, 6),
                      ([Int.max / 2, 4], [4, 1], 0, 16), ([3, 3], [Int.max / 2, 1], 0, 9)])
    func badViews(shape: [Int], strides: [Int], offset: Int, storage: Int) {
        #expect(throws: StridedTensorError.self) {
            try StridedTensor.validated(name: "t", dtype: .f32, shape: shape, strides: strides, storageOffset: offset, storageElements: storage)
        }
    }

    @Test("empty tensors and views with zero strides (broadcast) are accepted without reading past the storage")
    func edgeViews() throws {
        _ = try StridedTensor.validated(name: "e", dtype: .f32, shape: [0, 1 << 40], strides: [1 << 40, 1], storageOffset: 0, storageElements: 0)
        let b = try StridedTensor.validated(name: "b", dtype: .f32, shape: [3, 2], strides: [0, 1], storageOffset: 0, storageElements: 2)
        let values = [Float(7), 8].withUnsafeBytes { b.decodeFloats(from: $0) }
        #expect(values == [7, 8, 7, 8, 7, 8])
    }

    @Test(".npy headers: C and Fortran order, versions 1 and 2; malformed ones are refused")
    func npyHeaders() throws {
        func header(_ dict: String, version: UInt8 = 1) -> [UInt8] {
            var d = Array(dict.utf8)
            let pre = version == 1 ? 10 : 12
            while (pre + d.count + 1) % 64 != 0 { d.append(0x20) }
            d.append(0x0A)
            let length: [UInt8] = version == 1 ? withUnsafeBytes(of: UInt16(d.count).littleEndian, Array.init)
                                               : withUnsafeBytes(of: UInt32(d.count).littleEndian, Array.init)
            return NPYHeader.magic + [version, 0] + length + d
        }
        let c = try header("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }").withUnsafeBytes { try NPYHeader.parse($0) }
        #expect(c.dtype == .f32 && c.shape == [3, 4] && c.strides == [4, 1] && c.dataOffset == 128)
        let f = try header("{'descr': '<f2', 'fortran_order': True, 'shape': (3, 4)}", version: 2).withUnsafeBytes { try NPYHeader.parse($0) }
        #expect(f.dtype == .f16 && f.strides == [1, 3])
        for bad in ["{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }", "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }",
                    "{'descr': '<f4', 'shape': (3,), }", "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }",
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }", "{'descr': '<f4'"] {
            #expect(throws: NPYHeaderError.self, "\(bad)") { try header(bad).withUnsafeBytes { try NPYHeader.parse($0) } }
        }
    }

    @Test("random mutations of a valid pickle and of random ZIP-like bytes never crash the parsers (seeded, 20,000 inputs)")
    func mutationSmoke() {
        var rng = SplitMix(seed: 2024)
        let base = Self.stateDict
        for i in 0..<10_000 {
            var b = base
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                let at = Int(rng.next() % UInt64(b.count))
                switch rng.next() % 3 {
                case 0: b[at] = UInt8(truncatingIfNeeded: rng.next())
                case 1: b.remove(at: at)
                default: b.insert(UInt8(truncatingIfNeeded: rng.next()), at: at)
                }
            }
            _ = try? b.withUnsafeBytes { try RestrictedUnpickler.unpickle($0) }
            var z: [UInt8] = [0x50, 0x4B, 0x03, 0x04] + (0..<(64 + i % 200)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            z += [0x50, 0x4B, 0x05, 0x06] + (0..<18).map { _ in UInt8(truncatingIfNeeded: rng.next() % 4) }
            _ = try? z.withUnsafeBytes { try PyTorchArchiveLayout.parse(file: $0) }
        }
    }
}

/// A small seeded generator for reproducible mutation tests.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

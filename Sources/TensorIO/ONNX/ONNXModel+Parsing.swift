import Foundation

extension ONNXModel {
    typealias Failure = ProtobufReader.Failure

    /// ModelProto → its graph's initializers and nodes (field numbers from onnx.proto3).
    static func parseModel(_ bytes: UnsafeRawBufferPointer, folder: String) throws(Failure) -> (initializers: [Initializer], nodes: [Node]) {
        var reader = ProtobufReader(bytes)
        var graph: Range<Int>?
        var sawIRVersion = false
        while let (number, wire) = try reader.field() {
            switch (number, wire) {
            case (1, .varint): _ = try reader.varint(); sawIRVersion = true
            case (7, .lengthDelimited): graph = try reader.lengthDelimited()
            default: try reader.skip(wire)
            }
        }
        guard sawIRVersion else { throw Failure(offset: 0, reason: "no ir_version: not an ONNX ModelProto") }
        guard let graph else { throw Failure(offset: 0, reason: "the model has no graph") }
        var g = reader.sub(graph)
        var initializers: [Initializer] = []
        var nodes: [Node] = []
        while let (number, wire) = try g.field() {
            switch (number, wire) {
            case (1, .lengthDelimited): nodes.append(try parseNode(g.sub(try g.lengthDelimited())))
            case (5, .lengthDelimited): initializers.append(try parseTensor(g.sub(try g.lengthDelimited()), folder: folder))
            default: try g.skip(wire)
            }
        }
        return (initializers, nodes)
    }

    static func parseNode(_ reader: ProtobufReader) throws(Failure) -> Node {
        var r = reader
        var node = Node(opType: "", domain: "", name: "", inputs: [], outputs: [], ints: [:], intLists: [:])
        while let (number, wire) = try r.field() {
            switch (number, wire) {
            case (1, .lengthDelimited): node.inputs.append(r.string(try r.lengthDelimited()))
            case (2, .lengthDelimited): node.outputs.append(r.string(try r.lengthDelimited()))
            case (3, .lengthDelimited): node.name = r.string(try r.lengthDelimited())
            case (4, .lengthDelimited): node.opType = r.string(try r.lengthDelimited())
            case (7, .lengthDelimited): node.domain = r.string(try r.lengthDelimited())
            case (5, .lengthDelimited):
                var a = r.sub(try r.lengthDelimited())
                var name = "", value: Int64?, list: [Int64] = []
                while let (n, w) = try a.field() {
                    switch (n, w) {
                    case (1, .lengthDelimited): name = a.string(try a.lengthDelimited())
                    case (3, .varint): value = ProtobufReader.signed(try a.varint())
                    case (8, .varint): list.append(ProtobufReader.signed(try a.varint()))
                    case (8, .lengthDelimited):
                        var packed = a.sub(try a.lengthDelimited())
                        while !packed.atEnd { list.append(ProtobufReader.signed(try packed.varint())) }
                    default: try a.skip(w)
                    }
                }
                if let value { node.ints[name] = value }
                if !list.isEmpty { node.intLists[name] = list }
            default: try r.skip(wire)
            }
        }
        return node
    }

    /// TensorProto → an initializer whose data is located (not read); dims and sizes checked.
    static func parseTensor(_ reader: ProtobufReader, folder: String) throws(Failure) -> Initializer {
        var r = reader
        var dims: [Int] = []
        var dataType = 0
        var name = ""
        var data = DataRef.none
        var external: [String: String] = [:]
        var location = 0
        func dim(_ v: UInt64, at offset: Int) throws(Failure) -> Int {
            let d = ProtobufReader.signed(v)
            guard d >= 0, d <= Int64(ONNXModel.maximumElements) else { throw Failure(offset: offset, reason: "dimension \(d) out of range") }
            return Int(d)
        }
        while let (number, wire) = try r.field() {
            let at = r.base + r.position
            switch (number, wire) {
            case (1, .varint): dims.append(try dim(try r.varint(), at: at))
            case (1, .lengthDelimited):
                var packed = r.sub(try r.lengthDelimited())
                while !packed.atEnd { dims.append(try dim(try packed.varint(), at: at)) }
            case (2, .varint): dataType = Int(truncatingIfNeeded: try r.varint())
            case (8, .lengthDelimited): name = r.string(try r.lengthDelimited())
            case (9, .lengthDelimited): let p = try r.lengthDelimited(); data = .raw((r.base + p.lowerBound)..<(r.base + p.upperBound))
            case (4, .lengthDelimited): let p = try r.lengthDelimited(); data = .floats((r.base + p.lowerBound)..<(r.base + p.upperBound))
            case (10, .lengthDelimited): let p = try r.lengthDelimited(); data = .doubles((r.base + p.lowerBound)..<(r.base + p.upperBound))
            case (5, .lengthDelimited), (7, .lengthDelimited), (11, .lengthDelimited):
                let p = try r.lengthDelimited(); data = .varints((r.base + p.lowerBound)..<(r.base + p.upperBound))
            case (13, .lengthDelimited):
                var e = r.sub(try r.lengthDelimited())
                var key = "", value = ""
                while let (n, w) = try e.field() {
                    switch (n, w) {
                    case (1, .lengthDelimited): key = e.string(try e.lengthDelimited())
                    case (2, .lengthDelimited): value = e.string(try e.lengthDelimited())
                    default: try e.skip(w)
                    }
                }
                external[key] = value
            case (14, .varint): location = Int(truncatingIfNeeded: try r.varint())
            default: try r.skip(wire)
            }
        }
        var count = 1
        for d in dims {
            let (p, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow, p <= ONNXModel.maximumElements else {
                throw Failure(offset: reader.base, reason: "\(name): shape \(dims) has more than \(ONNXModel.maximumElements) elements")
            }
            count = p
        }
        if location == 1 {
            guard let file = external["location"] else { throw Failure(offset: reader.base, reason: "\(name): external data without a location") }
            // Only a plain relative path inside the model's folder: an ONNX file must not make us read anything else.
            let parts = file.split(separator: "/", omittingEmptySubsequences: false)
            guard !file.isEmpty, !file.hasPrefix("/"), !parts.contains(".."), !file.contains("\0") else {
                throw Failure(offset: reader.base, reason: "\(name): external data location \"\(file)\" is not a relative path inside the model's folder")
            }
            guard let offset = Int(external["offset"] ?? "0"), offset >= 0 else {
                throw Failure(offset: reader.base, reason: "\(name): external data offset \(external["offset"] ?? "") is not a non-negative integer")
            }
            let size = ONNXModel.elementSize(dataType).map { $0 * count }
            guard let length = external["length"].flatMap({ Int($0) }) ?? size, length >= 0 else {
                throw Failure(offset: reader.base, reason: "\(name): external data length missing or invalid")
            }
            data = .external(file: (folder.isEmpty ? "." : folder) + "/" + file, offset: offset, length: length)
        }
        return Initializer(name: name, dims: dims, dataType: dataType, data: data, count: count)
    }

    /// The matrices the graph multiplies by, as Hugging Face would store them, plus every other float initializer as
    /// it is; integer matrices nothing explains are listed as not decodable.
    static func logicalTensors(initializers: [Initializer], byName: [String: Initializer], nodes: [Node])
        -> (logical: [String: Logical], order: [String], unreadable: [(String, [Int], String)]) {
        var producer: [String: Node] = [:]
        for n in nodes { for o in n.outputs { producer[o] = n } }
        var logical: [String: Logical] = [:]
        var order: [String] = []
        var used = Set<String>()
        func isFloat(_ i: Initializer) -> Bool { [1, 10, 11, 16].contains(i.dataType) }
        func hfName(_ node: Node, _ source: String) -> String {
            if source.hasSuffix(".weight") && !source.hasPrefix("onnx::") { return source }
            var parts = node.name.split(separator: "/").map(String.init)
            guard parts.count >= 2 else { return source }
            parts.removeLast()
            return parts.joined(separator: ".") + ".weight"
        }
        func add(_ name: String, _ l: Logical) {
            var unique = name, k = 1
            while logical[unique] != nil { k += 1; unique = name + ".\(k)" }
            var l = l
            l.name = unique
            logical[unique] = l
            order.append(unique)
        }
        /// A MatMul/Gemm right-hand side: a float initializer, a DequantizeLinear of one, or either through a 2-D Transpose.
        func resolve(_ value: String, transpose: Bool, node: Node) {
            if let i = byName[value], i.dims.count == 2, isFloat(i) {
                guard !used.contains(value) else { return }
                used.insert(value)
                add(hfName(node, value), Logical(name: "", shape: transpose ? [i.dims[1], i.dims[0]] : i.dims, storage: ONNXModel.typeName(i.dataType),
                                               kind: .float(value, transpose: transpose)))
                return
            }
            guard let p = producer[value] else { return }
            if p.opType == "Transpose", p.inputs.count == 1, (p.intLists["perm"] ?? [1, 0]) == [1, 0] {
                resolve(p.inputs[0], transpose: !transpose, node: node)
            } else if p.opType == "DequantizeLinear", p.inputs.count >= 2, let x = byName[p.inputs[0]], x.dims.count == 2,
                      byName[p.inputs[1]] != nil {
                guard !used.contains(x.name) else { return }
                used.formUnion(p.inputs.filter { byName[$0] != nil })
                let zp = p.inputs.count > 2 && byName[p.inputs[2]] != nil ? p.inputs[2] : nil
                add(hfName(node, x.name), Logical(name: "", shape: transpose ? [x.dims[1], x.dims[0]] : x.dims,
                                                  storage: "ONNX DequantizeLinear \(ONNXModel.typeName(x.dataType))",
                                                  kind: .dequantizeLinear(x: x.name, scale: p.inputs[1], zeroPoint: zp, axis: Int(p.ints["axis"] ?? 1),
                                                                          block: Int(p.ints["block_size"] ?? 0), transpose: transpose)))
            }
        }
        for node in nodes {
            switch node.opType {
            case "MatMul" where node.inputs.count == 2:
                resolve(node.inputs[1], transpose: true, node: node)
            case "Gemm" where node.inputs.count >= 2:
                resolve(node.inputs[1], transpose: (node.ints["transB"] ?? 0) == 0, node: node)
            case "MatMulNBits" where node.inputs.count >= 3:
                guard let b = byName[node.inputs[1]], byName[node.inputs[2]] != nil,
                      let k = node.ints["K"], let n = node.ints["N"], k > 0, n > 0, k <= 1 << 24, n <= 1 << 24 else { continue }
                let bits = Int(clamping: node.ints["bits"] ?? 4), block = Int(clamping: node.ints["block_size"] ?? 32)
                guard (2...8).contains(bits), block >= 16, block <= 1 << 16, block & (block - 1) == 0 else { continue }
                let zp = node.inputs.count > 3 && byName[node.inputs[3]] != nil ? node.inputs[3] : nil
                let g = node.inputs.count > 4 && byName[node.inputs[4]] != nil ? node.inputs[4] : nil
                used.formUnion(node.inputs.filter { byName[$0] != nil })
                add(hfName(node, b.name), Logical(name: "", shape: [Int(n), Int(k)], storage: "ONNX MatMulNBits \(bits)-bit g\(block)",
                                                  kind: .matMulNBits(b: b.name, scales: node.inputs[2], zeroPoints: zp, gIdx: g,
                                                                     k: Int(k), n: Int(n), bits: bits, block: block)))
            case "DequantizeLinear" where node.inputs.count >= 2:
                // quantize_dynamic's embeddings: Gather(int table) → DequantizeLinear(scale, zero point).
                guard let g = producer[node.inputs[0]], g.opType == "Gather", let table = g.inputs.first.flatMap({ byName[$0] }),
                      table.dims.count == 2, !isFloat(table), !used.contains(table.name), byName[node.inputs[1]] != nil else { continue }
                let zp = node.inputs.count > 2 && byName[node.inputs[2]] != nil ? node.inputs[2] : nil
                used.formUnion([table.name, node.inputs[1]] + (zp.map { [$0] } ?? []))
                let name = table.name.hasSuffix("_quantized") ? String(table.name.dropLast("_quantized".count)) : table.name
                add(name, Logical(name: "", shape: table.dims, storage: "ONNX DequantizeLinear \(ONNXModel.typeName(table.dataType))",
                                  kind: .dequantizeLinear(x: table.name, scale: node.inputs[1], zeroPoint: zp, axis: Int(node.ints["axis"] ?? 1),
                                                          block: Int(node.ints["block_size"] ?? 0), transpose: false)))
            case "MatMulInteger" where node.inputs.count >= 2:
                guard let w = byName[node.inputs[1]], w.dims.count == 2 else { continue }
                let base = w.name.hasSuffix("_quantized") ? String(w.name.dropLast("_quantized".count)) : w.name
                guard let scale = byName[base + "_scale"], isFloat(scale) else { continue }
                let zp = node.inputs.count > 3 && byName[node.inputs[3]] != nil ? node.inputs[3] : byName[base + "_zero_point"]?.name
                used.formUnion([w.name, scale.name] + (zp.map { [$0] } ?? []))
                let name = base.hasSuffix(".weight") && !base.hasPrefix("onnx::") ? base : hfName(node, base)
                add(name, Logical(name: "", shape: [w.dims[1], w.dims[0]], storage: "ONNX MatMulInteger \(ONNXModel.typeName(w.dataType))",
                                  kind: .matMulInteger(w: w.name, scale: scale.name, zeroPoint: zp)))
            default: continue
            }
        }
        var unreadable: [(String, [Int], String)] = []
        for i in initializers where !used.contains(i.name) {
            if isFloat(i), ONNXModel.elementSize(i.dataType) != nil {
                add(i.name, Logical(name: "", shape: i.dims, storage: ONNXModel.typeName(i.dataType), kind: .float(i.name, transpose: false)))
            } else if i.dims.count == 2, i.count >= 4096 {
                unreadable.append((i.name, i.dims, "ONNX \(ONNXModel.typeName(i.dataType)) (not dequantized: no DequantizeLinear, MatMulNBits or MatMulInteger uses it)"))
            }
        }
        return (logical, order, unreadable)
    }
}

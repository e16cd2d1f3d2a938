import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// The hub quantizers' readers (`QuantizedSafetensors`) on hand-made files: a code that straddles two words decodes as
/// the format says, and every inconsistent layout is refused with a message that names the tensor, never a crash or a
/// matrix of the wrong size. (`Fuzz/QuantizedParser` runs the same readers on arbitrary bytes.)
@Suite("Hub quantized readers: hand-made and malformed files")
struct MalformedQuantizedTests {
    static let p = "model.layers.0.mlp.up_proj."

    static func words(_ w: [UInt32]) -> [UInt8] { w.flatMap { v in (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } } }
    static func f16(_ v: [Float]) -> [UInt8] { FloatConversion.encode(v, as: .f16) }
    static func i32(_ v: [Int32]) -> [UInt8] { words(v.map { UInt32(bitPattern: $0) }) }

    static func write(_ tensors: [OutputTensor], _ label: String) throws -> String {
        let dir = Fixtures.temporaryDirectory("quantized-\(label)")
        try SafetensorsWriter.write(tensors, metadata: nil, to: dir + "/model.safetensors", overwrite: false)
        return dir + "/model.safetensors"
    }

    @Test("GPTQ 3-bit: a code whose bits straddle two words decodes as one LSB-first stream (AutoGPTQ's 10|1|10|1|10 packing)")
    func gptqThreeBitStraddle() throws {
        // Column 0 of a [out 32, in 32] matrix: code 10 = 0b101 at stream bits 30…32 (two bits in word 0, one in word 1).
        var qweight = [UInt32](repeating: 0, count: 3 * 32)
        qweight[0] = 0b01 << 30
        qweight[32] = 0b1
        let path = try Self.write([
            OutputTensor(name: Self.p + "qweight", dtype: .i32, shape: [3, 32], bytes: Self.words(qweight)),
            OutputTensor(name: Self.p + "qzeros", dtype: .i32, shape: [1, 3], bytes: Self.words([0, 0, 0])), // stored z − 1 = 0
            OutputTensor(name: Self.p + "scales", dtype: .f16, shape: [1, 32], bytes: Self.f16([Float](repeating: 1, count: 32))),
            OutputTensor(name: Self.p + "g_idx", dtype: .i32, shape: [32], bytes: Self.i32([Int32](repeating: 0, count: 32))),
        ], "gptq3")
        let model = try openTensorSource(path: path)
        #expect(model.sourceTensor(named: Self.p + "weight")?.shape == [32, 32])
        let w = try model.decodeFloats(named: Self.p + "weight")
        #expect(w[10] == 4 && w[9] == -1 && w[11] == -1 && w[32 + 10] == -1, "\(w[8..<12])")
    }

    @Test("inconsistent layouts are refused naming the tensor", arguments: [
        "gptq-zeros", "awq-gemv-scales", "ct-zero-point", "nvfp4-scale", "hqq-wq", "hqq-packing", "gptq-planar"])
    func refused(_ label: String) throws {
        let u = Self.words([UInt32](repeating: 0x1234_5678, count: 16 * 32)) // 2,048 bytes: enough for every case below
        var t: [OutputTensor]
        switch label {
        case "gptq-zeros": // 3-bit qweight with qzeros sized for 4 bits
            t = [OutputTensor(name: Self.p + "qweight", dtype: .i32, shape: [12, 32], bytes: Array(u[0..<(12 * 32 * 4)])),
                 OutputTensor(name: Self.p + "qzeros", dtype: .i32, shape: [1, 4], bytes: Array(u[0..<16])),
                 OutputTensor(name: Self.p + "scales", dtype: .f16, shape: [1, 32], bytes: Self.f16([Float](repeating: 1, count: 32))),
                 OutputTensor(name: Self.p + "g_idx", dtype: .i32, shape: [128], bytes: Self.i32([Int32](repeating: 0, count: 128)))]
        case "gptq-planar":
            t = [OutputTensor(name: Self.p + "qweight", dtype: .i32, shape: [12, 32], bytes: Array(u[0..<(12 * 32 * 4)])),
                 OutputTensor(name: Self.p + "qzeros", dtype: .i32, shape: [1, 3], bytes: Array(u[0..<12])),
                 OutputTensor(name: Self.p + "scales", dtype: .f16, shape: [1, 32], bytes: Self.f16([Float](repeating: 1, count: 32))),
                 OutputTensor(name: Self.p + "g_idx", dtype: .i32, shape: [128], bytes: Self.i32([Int32](repeating: 0, count: 128)))]
        case "awq-gemv-scales": // scales narrower than 8 × the zeros' width
            t = [OutputTensor(name: Self.p + "qweight", dtype: .i32, shape: [16, 16], bytes: Array(u[0..<1024])),
                 OutputTensor(name: Self.p + "qzeros", dtype: .i32, shape: [16, 1], bytes: Array(u[0..<64])),
                 OutputTensor(name: Self.p + "scales", dtype: .f16, shape: [16, 4], bytes: Self.f16([Float](repeating: 1, count: 64)))]
        case "ct-zero-point": // zero points not packed along the output dimension
            t = [OutputTensor(name: Self.p + "weight_packed", dtype: .i32, shape: [16, 16], bytes: Array(u[0..<1024])),
                 OutputTensor(name: Self.p + "weight_scale", dtype: .f16, shape: [16, 1], bytes: Self.f16([Float](repeating: 1, count: 16))),
                 OutputTensor(name: Self.p + "weight_zero_point", dtype: .i32, shape: [16, 1], bytes: Array(u[0..<64]))]
        case "nvfp4-scale": // E4M3 scales per 32 instead of per 16
            t = [OutputTensor(name: Self.p + "weight_packed", dtype: .u8, shape: [16, 32], bytes: Array(u[0..<512])),
                 OutputTensor(name: Self.p + "weight_scale", dtype: .f8E4M3, shape: [16, 2], bytes: [UInt8](repeating: 0x38, count: 32)),
                 OutputTensor(name: Self.p + "weight_global_scale", dtype: .f32, shape: [1], bytes: FloatConversion.encode([448], as: .f32))]
        default: // HQQ: W_q with too few rows, or a packing that is not read
            let wq = label == "hqq-wq" ? [4, 64] : [8, 64]
            t = [OutputTensor(name: Self.p + "W_q", dtype: .u8, shape: wq, bytes: Array(u[0..<(wq[0] * 64)])),
                 OutputTensor(name: Self.p + "scale", dtype: .f16, shape: [16, 1], bytes: Self.f16([Float](repeating: 1, count: 16))),
                 OutputTensor(name: Self.p + "zero", dtype: .f16, shape: [16, 1], bytes: Self.f16([Float](repeating: 7, count: 16))),
                 OutputTensor(name: Self.p + "shape", dtype: .i64, shape: [2], bytes: Self.words([16, 0, 64, 0])),
                 OutputTensor(name: Self.p + "nbits", dtype: .i32, shape: [], bytes: Self.i32([4])),
                 OutputTensor(name: Self.p + "group_size", dtype: .i32, shape: [], bytes: Self.i32([64])),
                 OutputTensor(name: Self.p + "axis", dtype: .i32, shape: [], bytes: Self.i32([1])),
                 OutputTensor(name: Self.p + "packing", dtype: .u8, shape: [7], bytes: Array((label == "hqq-wq" ? "4bit_u8" : "4bit_32").utf8))]
        }
        let dir = try Self.write(t, label)
        if label == "gptq-planar" {
            try #"{"quantization_config": {"quant_method": "gptq", "bits": 3, "checkpoint_format": "gptq_p"}}"#
                .write(toFile: (dir as NSString).deletingLastPathComponent + "/config.json", atomically: true, encoding: .utf8)
        }
        do {
            let model = try openTensorSource(path: dir)
            Issue.record("\(label): opened, listing \(model.sourceTensors.map { "\($0.name) \($0.shape)" })")
        } catch {
            let message = "\(error)"
            #expect(message.contains(Self.p), "\(label): \(message)")
            print("\(label): \(message)")
        }
    }
}

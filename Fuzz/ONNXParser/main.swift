// libFuzzer target: arbitrary bytes through the ONNX reader `inspect` and `detect` use — the protobuf walk over
// ModelProto/GraphProto/NodeProto/TensorProto, the graph analysis that finds MatMul/Gemm/MatMulNBits/MatMulInteger/
// DequantizeLinear weights, and the decoding of every listed tensor up to 2²⁰ values — plus the error text the CLI
// would print. Built and run by scripts/fuzz.sh.
import TensorIO

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzONNX(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    do {
        let model = try ONNXModel(bytes: bytes, path: "fuzz.onnx")
        for t in model.sourceTensors where t.isFloating && t.shape.reduce(1, *) <= 1 << 20 {
            do {
                let v = try model.decodeFloats(named: t.name)
                precondition(v.count == t.shape.reduce(1, *), "\(t.name): \(v.count) values for shape \(t.shape)")
            } catch {
                precondition(!"\(error)".isEmpty)
            }
        }
    } catch {
        precondition(!"\(error)".isEmpty)
    }
    return 0
}

// libFuzzer target: a safetensors file whose tensors a hub quantizer wrote (GPTQ 2/3/4/8-bit, AWQ gemm/gemv,
// compressed-tensors int/NVFP4/MXFP4, HQQ, MLX, bitsandbytes, FP8), through the code `detect` runs on it: recognition by
// content (`QuantizedSafetensors.wrapIfQuantized`) and the decoding of every matrix it lists. Every recognized layout
// must either be refused with a message or decode to exactly the listed shape. Built and run by scripts/fuzz.sh.
import Foundation
import TensorIO

private let scratch = NSTemporaryDirectory() + "weightmark-fuzz-quantized-\(getpid()).safetensors"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzQuantized(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard FileManager.default.createFile(atPath: scratch, contents: Data(bytes: data ?? UnsafePointer(bitPattern: 1)!, count: size)) else { return 0 }
    let model: SafetensorsModel
    do { model = try SafetensorsModel(path: scratch) } catch { return 0 }
    let wrapped: QuantizedSafetensors
    do {
        guard let q = try QuantizedSafetensors.wrapIfQuantized(model) else { return 0 }
        wrapped = q
    } catch {
        precondition(!error.localizedDescription.isEmpty)
        return 0
    }
    for t in wrapped.sourceTensors where t.isFloating && t.shape.count == 2 && t.shape.reduce(1, *) <= 1 << 20 {
        do {
            let values = try wrapped.decodeFloats(named: t.name)
            precondition(values.count == t.shape[0] * t.shape[1], "\(t.name): \(values.count) values for \(t.shape)")
        } catch {
            precondition(!error.localizedDescription.isEmpty)
        }
        wrapped.releaseTensor(named: t.name)
    }
    return 0
}

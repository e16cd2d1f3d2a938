// libFuzzer target: a whole safetensors file from arbitrary bytes, through the code `inspect`, `detect` and
// `embed` run on a file: header parse and validation (`SafetensorsFile`), tensor byte ranges, float decoding,
// statistics, and the error message the CLI would print. Built and run by scripts/fuzz.sh (`make fuzz`).
import TensorIO

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let mapping = MappedFile(copying: UnsafeRawBufferPointer(start: data, count: size), path: "fuzz.safetensors")
    let file: SafetensorsFile
    do {
        file = try SafetensorsFile(mapping: mapping)
    } catch {
        precondition(!error.description.isEmpty)
        return 0
    }
    for t in file.tensors {
        precondition(file.descriptor(named: t.name) != nil)
        let range = file.fileRange(of: t)
        precondition(range.lowerBound >= file.header.dataStart && range.upperBound <= mapping.size)
        precondition(t.byteCount == range.count)
        _ = t.elementCount
        _ = t.matrixShape
        if t.dtype.isSupportedFloat {
            do {
                let values = try file.floats(of: t)
                precondition(values.count == t.elementCount)
                _ = values.withUnsafeBufferPointer { TensorStatistics($0) }
            } catch {
                preconditionFailure("a validated float tensor failed to decode: \(error)")
            }
        }
    }
    return 0
}

// libFuzzer target: a whole GGUF file from arbitrary bytes, through the code `inspect` and `detect` run on a
// .gguf: header, metadata and tensor-info parse (`GGUFFile`), Hugging Face name mapping and rotary row
// restoration (`GGUFModel`), dequantization of every decodable tensor (`GGMLBlockCodec`), statistics, and
// the error message the CLI would print. Built and run by scripts/fuzz.sh (`make fuzz`).
import TensorIO

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGGUF(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let mapping = MappedFile(copying: UnsafeRawBufferPointer(start: data, count: size), path: "fuzz.gguf")
    let file: GGUFFile
    do {
        file = try GGUFFile(mapping: mapping)
    } catch {
        precondition(!String(describing: error).isEmpty)
        return 0
    }
    for (_, value) in file.metadata { _ = value.summary; _ = value.integer }
    let model: GGUFModel
    do {
        model = try GGUFModel(file: file)
    } catch {
        precondition(!String(describing: error).isEmpty)
        return 0
    }
    for t in model.sourceTensors {
        guard let info = model.ggufInfo(named: t.name) else { preconditionFailure("listed tensor \(t.name) not found") }
        // The listed shape is ne reversed. (Its product is not taken here: with a zero dimension ggml accepts
        // dimensions whose product overflows in the reversed order, and nothing multiplies them that way.)
        precondition(t.shape == Array(info.ne.reversed()))
        guard t.isFloating else { continue }
        do {
            let values = try model.decodeFloats(named: t.name)
            precondition(values.count == info.elementCount)
            _ = values.withUnsafeBufferPointer { TensorStatistics($0) }
        } catch {
            preconditionFailure("a validated tensor failed to decode: \(error)")
        }
    }
    return 0
}

/// Rewrites any tensor source as one safetensors file, so tools that rewrite models (`attack`, `bench`) can take
/// PyTorch checkpoints, Meta folders and NumPy arrays as input.
///
/// Sources that expose their stored elements (`StoredTensorSource`) keep every tensor's element type and bytes
/// (row-major, Hugging Face names and layout); other sources (GGUF) give their float tensors as F32 and drop the rest.
/// Tensors are produced one at a time, so memory stays bounded by the largest tensor.
public enum SafetensorsExport {
    /// Writes `source` to `destination`; returns the names of tensors left out (non-float tensors of a GGUF file).
    @discardableResult
    public static func write(_ source: any TensorSource, to destination: String, overwrite: Bool,
                             metadata: [(key: String, value: String)]? = nil) throws -> [String] {
        var outputs: [OutputTensor] = []
        var dropped: [String] = []
        for t in source.sourceTensors {
            if let stored = source as? any StoredTensorSource, let dtype = stored.storedDType(named: t.name) {
                outputs.append(OutputTensor(name: t.name, dtype: dtype, shape: t.shape) { sink in
                    let bytes = try stored.rowMajorBytes(named: t.name)
                    stored.releaseTensor(named: t.name)
                    try bytes.withUnsafeBytes { try sink($0) }
                })
            } else if t.isFloating {
                outputs.append(OutputTensor(name: t.name, dtype: .f32, shape: t.shape) { sink in
                    let values = try source.decodeFloats(named: t.name)
                    source.releaseTensor(named: t.name)
                    try values.withUnsafeBytes { try sink($0) }
                })
            } else {
                dropped.append(t.name)
            }
        }
        try SafetensorsWriter.write(outputs, metadata: metadata, to: destination, overwrite: overwrite)
        return dropped
    }
}

import Crypto
import Foundation
import TensorIO

/// SHA-256 of a model's tensors as stored, independent of file names, sharding and tensor order: what a commitment
/// binds the unmarked original by (docs/FORMAT.md, "Releases").
///
///     "weightmark tensors v1" ‖ for each tensor, by name in byte order:
///         LE64(|name|) ‖ name ‖ LE64(|dtype|) ‖ dtype ‖ LE64(rank) ‖ LE64(dim)… ‖ LE64(|bytes|) ‖ bytes
///
/// The safetensors dtype spelling ("F32", "BF16", …) is used; `__metadata__` and non-tensor files are not covered.
public enum TensorDigest {
    public static let domainTag = Array("weightmark tensors v1".utf8)

    /// - Complexity: one pass over the tensor bytes (SHA-256 at ~1.2 GB/s per core); mapped pages are released as
    ///   each tensor is done.
    public static func of(_ model: SafetensorsModel) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(data: domainTag)
        func le64(_ v: Int) { withUnsafeBytes(of: UInt64(v).littleEndian) { hasher.update(bufferPointer: $0) } }
        for t in model.tensors.sorted(by: { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }) {
            let name = Array(t.name.utf8), dtype = Array(t.dtype.rawValue.utf8)
            le64(name.count); hasher.update(data: name)
            le64(dtype.count); hasher.update(data: dtype)
            le64(t.shape.count)
            for d in t.shape { le64(d) }
            model.withBytes(of: t) { bytes in
                le64(bytes.count)
                hasher.update(bufferPointer: bytes)
            }
            model.release(t)
        }
        return Array(hasher.finalize())
    }
}

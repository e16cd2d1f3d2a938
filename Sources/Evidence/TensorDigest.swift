import Crypto
import Foundation
import TensorIO

/// SHA-256 of a model's tensors as stored, independent of file names, sharding and tensor order: what a commitment
/// binds the unmarked original by (docs/FORMAT.md, "Releases and commitments").
///
///     "weightmark tensors v1" ‖ for each tensor, by name in byte order:
///         LE64(|name|) ‖ name ‖ LE64(|dtype|) ‖ dtype ‖ LE64(rank) ‖ LE64(dim)… ‖ LE64(|bytes|) ‖ SHA-256(bytes)
///
/// Each tensor's bytes are hashed on their own, so tensors hash in parallel and alongside `embed`. The safetensors
/// dtype spelling ("F32", "BF16", …) is used; `__metadata__` and non-tensor files are not covered.
public enum TensorDigest {
    public static let domainTag = Array("weightmark tensors v1".utf8)

    /// - Parameter workers: threads hashing tensors at once (largest tensors first).
    /// - Complexity: one pass over the tensor bytes (SHA-256 at ~1.4 GB/s per core); mapped pages are released as
    ///   each tensor is done.
    public static func of(_ model: SafetensorsModel, workers: Int = 1) -> [UInt8] {
        let tensors = model.tensors.sorted { Array($0.name.utf8).lexicographicallyPrecedes(Array($1.name.utf8)) }
        let order = tensors.indices.sorted { tensors[$0].descriptor.byteCount > tensors[$1].descriptor.byteCount }
        let digests = TensorDigestSlots(count: tensors.count)
        let next = TensorDigestSlots.Counter()
        DispatchQueue.concurrentPerform(iterations: max(1, min(workers, tensors.count))) { _ in
            while let k = next.take(below: order.count) {
                let t = tensors[order[k]]
                let d = model.withBytes(of: t) { Array(SHA256.hash(data: $0)) }
                model.release(t)
                digests.set(order[k], d)
            }
        }
        var hasher = SHA256()
        hasher.update(data: domainTag)
        func le64(_ v: Int) { withUnsafeBytes(of: UInt64(v).littleEndian) { hasher.update(bufferPointer: $0) } }
        for (k, t) in tensors.enumerated() {
            let name = Array(t.name.utf8), dtype = Array(t.dtype.rawValue.utf8)
            le64(name.count); hasher.update(data: name)
            le64(dtype.count); hasher.update(data: dtype)
            le64(t.shape.count)
            for d in t.shape { le64(d) }
            le64(t.descriptor.byteCount)
            hasher.update(data: digests.get(k))
        }
        return Array(hasher.finalize())
    }
}

/// Per-tensor digests filled by the hashing threads.
/// Sendable: `slots` is only touched under `lock`.
private final class TensorDigestSlots: @unchecked Sendable {
    private var slots: [[UInt8]]
    private let lock = NSLock()
    init(count: Int) { slots = Array(repeating: [], count: count) }
    func set(_ k: Int, _ d: [UInt8]) { lock.withLock { slots[k] = d } }
    func get(_ k: Int) -> [UInt8] { lock.withLock { slots[k] } }

    // Sendable: `value` is only touched under `lock`.
    final class Counter: @unchecked Sendable {
        private var value = 0
        private let lock = NSLock()
        func take(below limit: Int) -> Int? {
            lock.withLock { defer { value += 1 }; return value < limit ? value : nil }
        }
    }
}

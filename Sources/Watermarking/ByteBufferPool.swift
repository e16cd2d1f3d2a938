import Foundation
import TensorIO

/// Reusable byte buffers for results on their way to a consumer (marked tensors to the writer). A fresh
/// multi-hundred-MB allocation costs a page fault and a zeroed page per 4 KiB, and freeing it unmaps the
/// range under the address-space lock the other workers' page faults need; reusing buffers costs none of
/// that. A model repeats a few tensor sizes layer after layer, so buffers are matched by exact size. They
/// start on a page boundary with a page to spare, so the writer can write them in place at any `lead`
/// (`PlacedBytes`). Idle buffers are kept up to `keepBytes` in all, the least recently returned go first.
/// Sendable: `idle` and its byte count are read and written only under `lock`; `keepBytes` is a `let`.
final class ByteBufferPool: @unchecked Sendable {
    private let lock = NSLock()
    private var idle: [UnsafeMutableRawBufferPointer] = []   // oldest first
    private let keepBytes: Int

    init(keepBytes: Int) { self.keepBytes = keepBytes }

    deinit { idle.forEach { $0.deallocate() } }

    /// Bytes held by idle buffers.
    var idleBytes: Int { lock.withLock { idle.reduce(0) { $0 + $1.count } } }

    /// `count` bytes at offset `lead` (< 4096) of a page-aligned buffer (contents undefined), returned to the
    /// pool when released.
    func take(_ count: Int, lead: Int = 0) -> PooledBytes {
        precondition((0..<PlacedBytes.alignment).contains(lead))
        let capacity = count + PlacedBytes.alignment
        let reused: UnsafeMutableRawBufferPointer? = lock.withLock {
            guard let i = idle.lastIndex(where: { $0.count == capacity }) else { return nil }
            return idle.remove(at: i)
        }
        let storage = reused ?? .allocate(byteCount: capacity, alignment: PlacedBytes.alignment)
        return PooledBytes(storage: storage, lead: lead, count: count, pool: self)
    }

    fileprivate func give(_ storage: UnsafeMutableRawBufferPointer) {
        let dropped: [UnsafeMutableRawBufferPointer] = lock.withLock {
            idle.append(storage)
            var total = idle.reduce(0) { $0 + $1.count }, drop = 0
            while total > keepBytes, drop < idle.count - 1 {
                total -= idle[drop].count
                drop += 1
            }
            defer { idle.removeFirst(drop) }
            return Array(idle[..<drop])
        }
        dropped.forEach { $0.deallocate() }
    }
}

/// `count` bytes at offset `lead` of a pooled buffer; the buffer goes back to its pool when this is released.
/// Sendable: owned by one holder at a time: a worker fills it, then hands it to the writer, which returns it to the
/// pool (under the pool's lock); its fields are `let`s.
final class PooledBytes: @unchecked Sendable {
    let storage: UnsafeMutableRawBufferPointer
    let lead: Int
    let count: Int
    private let pool: ByteBufferPool

    fileprivate init(storage: UnsafeMutableRawBufferPointer, lead: Int, count: Int, pool: ByteBufferPool) {
        self.storage = storage
        self.lead = lead
        self.count = count
        self.pool = pool
    }

    deinit { pool.give(storage) }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[lead..<(lead + count)]) }
    var mutableBytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(rebasing: storage[lead..<(lead + count)]) }
    /// The bytes for a writer that may write them in place (it keeps this object alive meanwhile).
    var placed: PlacedBytes { PlacedBytes(base: storage.baseAddress!, lead: lead, count: count, owner: self) }
}

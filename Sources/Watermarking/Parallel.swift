import Foundation
import LinearAlgebra
import TensorIO

/// Tensor-level parallelism without oversubscription: `workers` tensors at a time, one BLAS thread each
/// (restored afterwards). Small projections and rank-32 updates gain nothing from BLAS threads, while
/// decoding, page faults and carrier generation are single-threaded per tensor, so tensor-level
/// concurrency is what keeps both cores busy.
enum Parallel {
    static var defaultWorkers: Int { max(1, min(2, ProcessInfo.processInfo.activeProcessorCount)) }

    /// Runs `body` with OpenBLAS single-threaded.
    static func withSingleThreadedBLAS<R>(_ body: () throws -> R) rethrows -> R {
        let previous = BLASInfo.current.threadCount
        BLASInfo.setThreadCount(1)
        defer { if let previous { BLASInfo.setThreadCount(previous) } }
        return try body()
    }

    /// `map` over indices with `workers` threads; results in index order; the first error is rethrown.
    static func map<T>(count: Int, workers: Int, _ body: @escaping (Int) throws -> T) throws -> [T] {
        let lock = NSLock()
        nonisolated(unsafe) var results = [T?](repeating: nil, count: count)
        nonisolated(unsafe) var firstError: Error?
        nonisolated(unsafe) var next = 0
        nonisolated(unsafe) let work = body
        DispatchQueue.concurrentPerform(iterations: max(1, min(workers, count))) { _ in
            while true {
                lock.lock()
                let i = next
                next += 1
                let stop = firstError != nil
                lock.unlock()
                if i >= count || stop { return }
                do {
                    let r = try work(i)
                    lock.lock(); results[i] = r; lock.unlock()
                } catch {
                    lock.lock(); if firstError == nil { firstError = error }; lock.unlock()
                }
            }
        }
        if let firstError { throw firstError }
        return results.map { $0! }
    }
}

/// Computes results for indices 0, 1, 2, … ahead of their consumption, `concurrency` at a time and at most
/// `window` computed or in flight, so a sequential consumer (the file writer) overlaps with computation of
/// the next tensors while memory stays bounded by `window` results. A window above the concurrency lets
/// the workers run on while the consumer is busy with one large result.
final class OrderedPrefetcher<T>: @unchecked Sendable {
    private let count: Int
    private let window: Int
    private let work: (Int) throws -> T
    private let running: DispatchSemaphore
    private let lock = NSCondition()
    private var results: [Int: Result<T, Error>] = [:]
    private var submitted = 0
    private let queue = DispatchQueue(label: "weightmark.prefetch", attributes: .concurrent)

    init(count: Int, window: Int, concurrency: Int, work: @escaping (Int) throws -> T) {
        self.count = count
        self.window = max(1, window)
        self.running = DispatchSemaphore(value: max(1, concurrency))
        self.work = work
        lock.lock()
        while submitted < min(self.window, count) { submitLocked() }
        lock.unlock()
    }

    private func submitLocked() {
        let i = submitted
        submitted += 1
        queue.async { [self] in
            running.wait()
            let r = Result { try work(i) }
            running.signal()
            lock.lock()
            results[i] = r
            lock.broadcast()
            lock.unlock()
        }
    }

    /// Blocks until result `i` is ready; consuming it lets the next index start.
    func take(_ i: Int) throws -> T {
        lock.lock()
        while results[i] == nil { lock.wait() }
        let r = results.removeValue(forKey: i)!
        if submitted < count { submitLocked() }
        lock.unlock()
        return try r.get()
    }

    /// Waits for work still running (after an error, before returning).
    func drain() {
        queue.sync(flags: .barrier) {}
    }
}

/// Reusable byte buffers for results on their way to a consumer (marked tensors to the writer). A fresh
/// multi-hundred-MB allocation costs a page fault and a zeroed page per 4 KiB, and freeing it unmaps the
/// range under the address-space lock the other workers' page faults need; reusing a few buffers costs none
/// of that. Buffers start on a page boundary, so the writer can write them in place (`PlacedBytes`). At most
/// `keep` idle buffers are kept (the smallest go first).
final class ByteBufferPool: @unchecked Sendable {
    private let lock = NSLock()
    private var idle: [UnsafeMutableRawBufferPointer] = []
    private let keep: Int

    init(keep: Int) { self.keep = max(1, keep) }

    deinit { idle.forEach { $0.deallocate() } }

    /// `count` bytes at offset `lead` (< 4096) of a page-aligned buffer (contents undefined), returned to the
    /// pool when released.
    func take(_ count: Int, lead: Int = 0) -> PooledBytes {
        let size = lead + count
        let reused: UnsafeMutableRawBufferPointer? = lock.withLock {
            guard let i = idle.indices.filter({ idle[$0].count >= size }).min(by: { idle[$0].count < idle[$1].count }) else { return nil }
            return idle.remove(at: i)
        }
        let storage = reused ?? .allocate(byteCount: max(1, size), alignment: PlacedBytes.alignment)
        return PooledBytes(storage: storage, lead: lead, count: count, pool: self)
    }

    fileprivate func give(_ storage: UnsafeMutableRawBufferPointer) {
        let dropped: UnsafeMutableRawBufferPointer? = lock.withLock {
            idle.append(storage)
            guard idle.count > keep, let i = idle.indices.min(by: { idle[$0].count < idle[$1].count }) else { return nil }
            return idle.remove(at: i)
        }
        dropped?.deallocate()
    }
}

/// `count` bytes at offset `lead` of a pooled buffer; the buffer goes back to its pool when this is released.
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

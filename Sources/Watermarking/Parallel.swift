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
        let state = Locked((results: [T?](repeating: nil, count: count), firstError: Error?.none, next: 0))
        // `body` runs on several threads at once: callers pass closures that only read what they capture, or reach
        // shared mutable state through a `Locked` (TileDetector, Detector). Nothing else makes a non-Sendable closure
        // safe to call concurrently, so this is stated here rather than checked.
        nonisolated(unsafe) let work = body
        DispatchQueue.concurrentPerform(iterations: max(1, min(workers, count))) { _ in
            while true {
                let (i, stop) = state.withLock { s -> (Int, Bool) in
                    defer { s.next += 1 }
                    return (s.next, s.firstError != nil)
                }
                if i >= count || stop { return }
                do {
                    let r = try work(i)
                    state.withLock { $0.results[i] = r }
                } catch {
                    state.withLock { if $0.firstError == nil { $0.firstError = error } }
                }
            }
        }
        return try state.withLock { s in
            if let e = s.firstError { throw e }
            return s.results.map { $0! }
        }
    }
}

/// Computes results for indices 0, 1, 2, … ahead of their consumption by a sequential consumer (the file
/// writer), on `concurrency` threads. Results computed or in progress but not yet taken are bounded by a
/// memory budget: a worker starts index i only if the costs (bytes) of the pending results plus i's fit in
/// `budget`, or fewer than `minimumAhead` results are pending (so one result larger than the budget still
/// gets computed). A budget of several results lets the workers run on while the consumer is busy with a
/// large one, without the memory of a fixed count of large results.
final class OrderedPrefetcher<T>: @unchecked Sendable {
    // All mutable state (results, next, taken, pendingCost, cancelled) is read and written under `lock`.
    private let count: Int
    private let minimumAhead: Int
    private let budget: Int
    private let cost: (Int) -> Int
    private let work: (Int) throws -> T
    private let lock = NSCondition()
    private var results: [Int: Result<T, Error>] = [:]
    private var next = 0, taken = 0, pendingCost = 0
    private var cancelled = false
    private let workers = DispatchGroup()

    init(count: Int, concurrency: Int, minimumAhead: Int, budget: Int, cost: @escaping (Int) -> Int,
         work: @escaping (Int) throws -> T) {
        self.count = count
        self.minimumAhead = max(1, minimumAhead)
        self.budget = budget
        self.cost = cost
        self.work = work
        for _ in 0..<max(1, min(concurrency, count)) {
            DispatchQueue.global().async(group: workers) { [self] in workerLoop() }
        }
    }

    private func workerLoop() {
        while true {
            lock.lock()
            while !cancelled, next < count, next - taken >= minimumAhead, pendingCost + cost(next) > budget { lock.wait() }
            if cancelled || next >= count {
                lock.unlock()
                return
            }
            let i = next
            next += 1
            pendingCost += cost(i)
            lock.unlock()
            let r = Result { try work(i) }
            lock.lock()
            results[i] = r
            lock.broadcast()
            lock.unlock()
        }
    }

    /// Blocks until result `i` is ready (results are taken in index order); taking it frees its budget.
    func take(_ i: Int) throws -> T {
        lock.lock()
        precondition(i == taken, "results are taken in order")
        while results[i] == nil { lock.wait() }
        let r = results.removeValue(forKey: i)!
        taken += 1
        pendingCost -= cost(i)
        lock.broadcast()
        lock.unlock()
        return try r.get()
    }

    /// Stops starting new work and waits for work still running (after an error, before returning).
    func drain() {
        lock.lock()
        cancelled = true
        lock.broadcast()
        lock.unlock()
        workers.wait()
    }
}

/// Reusable byte buffers for results on their way to a consumer (marked tensors to the writer). A fresh
/// multi-hundred-MB allocation costs a page fault and a zeroed page per 4 KiB, and freeing it unmaps the
/// range under the address-space lock the other workers' page faults need; reusing buffers costs none of
/// that. A model repeats a few tensor sizes layer after layer, so buffers are matched by exact size. They
/// start on a page boundary with a page to spare, so the writer can write them in place at any `lead`
/// (`PlacedBytes`). Idle buffers are kept up to `keepBytes` in all, the least recently returned go first.
final class ByteBufferPool: @unchecked Sendable {
    // `idle` and its byte count are read and written only under `lock`.
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
final class PooledBytes: @unchecked Sendable {
    // Owned by one holder at a time: a worker fills it, then hands it to the writer, which returns it to the pool.
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

import Foundation
import LinearAlgebra

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

/// Computes results for indices 0, 1, 2, … ahead of their consumption, at most `window` in flight, so a
/// sequential consumer (the file writer) overlaps with computation of the next tensors while memory stays
/// bounded by `window` results.
final class OrderedPrefetcher<T>: @unchecked Sendable {
    private let count: Int
    private let window: Int
    private let work: (Int) throws -> T
    private let lock = NSCondition()
    private var results: [Int: Result<T, Error>] = [:]
    private var submitted = 0
    private let queue = DispatchQueue(label: "weightmark.prefetch", attributes: .concurrent)

    init(count: Int, window: Int, work: @escaping (Int) throws -> T) {
        self.count = count
        self.window = max(1, window)
        self.work = work
        lock.lock()
        while submitted < min(self.window, count) { submitLocked() }
        lock.unlock()
    }

    private func submitLocked() {
        let i = submitted
        submitted += 1
        queue.async { [self] in
            let r = Result { try work(i) }
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

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
        // Unsafe: `body` runs on several threads at once; callers pass closures that only read what they capture or
        // reach shared mutable state through a `Locked` (TileDetector, Detector, Tracer): stated here, not checked.
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

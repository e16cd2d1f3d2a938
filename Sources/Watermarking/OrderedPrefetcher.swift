import Foundation

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

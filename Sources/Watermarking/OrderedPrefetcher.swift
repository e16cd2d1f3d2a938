import Foundation

/// Computes results for indices 0, 1, 2, … ahead of their consumption by a sequential consumer (the file
/// writer), on `concurrency` threads. Results computed or in progress but not yet taken are bounded by a
/// memory budget: a worker starts index i only if the costs (bytes) of the pending results plus i's fit in
/// `budget`, or fewer than `minimumAhead` results are pending (so one result larger than the budget still
/// gets computed). A budget of several results lets the workers run on while the consumer is busy with a
/// large one, without the memory of a fixed count of large results.
///
/// Several consumers (the writers of several copies) may each take every result, each in index order; a result
/// and its budget are freed when the last of them has taken it (or given up: `abandon(consumer:)`).
/// Sendable: all mutable state (results, next, taken, pendingCost, cancelled, takenBy, takers, abandoned) is read
/// and written under `lock`; `work` runs on several threads at once, so callers pass one touching only Sendable state.
final class OrderedPrefetcher<T>: @unchecked Sendable {
    private let count: Int
    private let consumers: Int
    /// The next index each consumer takes.
    private var takenBy: [Int]
    /// How many consumers have taken each pending result.
    private var takers: [Int: Int] = [:]
    /// Consumers that gave up, with the index they had reached.
    private var abandoned: [Int: Int] = [:]
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
         consumers: Int = 1, work: @escaping (Int) throws -> T) {
        precondition(consumers >= 1)
        self.count = count
        self.consumers = consumers
        takenBy = [Int](repeating: 0, count: consumers)
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

    /// Blocks until result `i` is ready (each consumer takes results in index order); the last consumer to take
    /// it frees its budget.
    func take(_ i: Int, consumer: Int = 0) throws -> T {
        lock.lock()
        precondition(i == takenBy[consumer], "results are taken in order")
        while results[i] == nil { lock.wait() }
        let r = results[i]!
        takenBy[consumer] += 1
        takers[i, default: 0] += 1
        freeIfDone(i)
        lock.unlock()
        return try r.get()
    }

    /// Consumer `consumer` takes no more results (its writer failed): the others no longer wait for it.
    func abandon(consumer: Int) {
        lock.lock()
        defer { lock.unlock() }
        guard abandoned[consumer] == nil else { return }
        abandoned[consumer] = takenBy[consumer]
        if abandoned.count == consumers {
            cancelled = true
            lock.broadcast()
            return
        }
        // Computed results it had not taken: the others may have been the last to need them.
        for i in takenBy[consumer]..<next where results[i] != nil { freeIfDone(i) }
    }

    /// Under `lock`: frees result `i` once every consumer has taken it or had given up before reaching it.
    private func freeIfDone(_ i: Int) {
        let gaveUp = abandoned.values.count { $0 <= i }
        guard (takers[i] ?? 0) + gaveUp >= consumers else { return }
        takers.removeValue(forKey: i)
        results.removeValue(forKey: i)
        taken += 1
        pendingCost -= cost(i)
        lock.broadcast()
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

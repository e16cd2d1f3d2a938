import Foundation
import Testing
import TensorIO
@testable import Watermarking

/// The prefetcher behind `embed`: several consumers (one writer per personal copy) each take every result in order,
/// and a consumer that gives up never makes the others wait.
@Suite("Ordered prefetcher with several consumers")
struct OrderedPrefetcherTests {
    @Test("every consumer gets every result in order, a slow one among them, within a budget of 3 results")
    func consumersTakeAll() throws {
        let prefetcher = OrderedPrefetcher<Int>(count: 40, concurrency: 2, minimumAhead: 1, budget: 3, cost: { _ in 1 }, consumers: 3) { $0 * $0 }
        defer { prefetcher.drain() }
        let got = Locked([[Int]](repeating: [], count: 3))
        let group = DispatchGroup()
        for c in 0..<3 {
            DispatchQueue.global().async(group: group) {
                for i in 0..<40 {
                    let v = try! prefetcher.take(i, consumer: c)
                    got.withLock { $0[c].append(v) }
                    if c == 2 { usleep(200) } // a slow writer: the others must not run more than the budget ahead of it
                }
            }
        }
        #expect(group.wait(timeout: .now() + 30) == .success)
        #expect(got.withLock { $0 } == Array(repeating: (0..<40).map { $0 * $0 }, count: 3))
    }

    @Test("a consumer that abandons (its writer failed) does not hold the others back")
    func abandonedConsumer() throws {
        let prefetcher = OrderedPrefetcher<Int>(count: 30, concurrency: 2, minimumAhead: 1, budget: 2, cost: { _ in 1 }, consumers: 2) { $0 }
        defer { prefetcher.drain() }
        #expect(try prefetcher.take(0, consumer: 1) == 0)
        prefetcher.abandon(consumer: 1)
        let done = DispatchSemaphore(value: 0)
        let taken = Locked([Int]())
        DispatchQueue.global().async {
            for i in 0..<30 { let v = try! prefetcher.take(i, consumer: 0); taken.withLock { $0.append(v) } }
            done.signal()
        }
        #expect(done.wait(timeout: .now() + 30) == .success, "the remaining consumer waited for the one that gave up")
        #expect(taken.withLock { $0 } == Array(0..<30))
    }
}

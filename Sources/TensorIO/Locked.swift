import Foundation

/// A value shared between threads, reachable only under its lock.
///
/// Worker threads (`DispatchQueue.concurrentPerform`, background hashing) hand results, counters and progress to
/// each other through one of these instead of capturing mutable variables.
/// Sendable: `value` is read and written only inside `withLock`, which holds `lock`.
public final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    public init(_ value: Value) { self.value = value }

    /// Runs `body` with exclusive access to the value.
    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

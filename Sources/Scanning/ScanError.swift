import Foundation

/// Failures of a sweep as a whole (one model's problems become its record's status instead).
public enum ScanError: Error, CustomStringConvertible, Equatable {
    case shardEnvironment(String)
    case invalidShardFile(path: String, reason: String)

    public var description: String {
        switch self {
        case let .shardEnvironment(m): "--shard auto: \(m)."
        case let .invalidShardFile(path, reason): "\(path): \(reason)."
        }
    }
}

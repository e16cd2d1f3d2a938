import Crypto
import Foundation

/// Which part of a sweep this process scans: shard `index` of `count`.
///
/// Models are assigned by a hash of their path relative to the scan root (`owner(of:)`), so N processes given the
/// same inputs split the work without talking to each other, and a rerun of one index redoes exactly its models.
public struct ScanShard: Sendable, Equatable, Codable, CustomStringConvertible {
    public var index: Int
    public var count: Int

    public static let whole = ScanShard(index: 0, count: 1)

    public init(index: Int, count: Int) {
        precondition(count >= 1 && index >= 0 && index < count, "shard \(index)/\(count)")
        self.index = index; self.count = count
    }

    /// Parses "i/N" with 0 ≤ i < N.
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, i >= 0, i < n else { return nil }
        self.init(index: i, count: n)
    }

    public var description: String { "\(index)/\(count)" }

    /// The shard of a batch engine's array task, read from the variables the engines set:
    ///
    /// - Kubernetes Indexed Job: `JOB_COMPLETION_INDEX` (0-based); Kubernetes sets no count, so `WEIGHTMARK_SHARDS`
    ///   must hold the Job's `completions`.
    /// - AWS Batch array job: `AWS_BATCH_JOB_ARRAY_INDEX` (0-based) and `AWS_BATCH_JOB_ARRAY_SIZE`.
    /// - Slurm job array: `SLURM_ARRAY_TASK_ID` less `SLURM_ARRAY_TASK_MIN`, and `SLURM_ARRAY_TASK_COUNT`
    ///   (an array must be contiguous, `--array=0-N` or `1-N`, for the index to be dense).
    ///
    /// `WEIGHTMARK_SHARDS`, when set, gives the count for every engine (and must agree with the engine's own).
    /// - Throws: `ScanError.shardEnvironment` saying which variable is missing or wrong.
    public static func fromEnvironment(_ env: [String: String]) throws -> ScanShard {
        func int(_ name: String) throws -> Int? {
            guard let v = env[name], !v.isEmpty else { return nil }
            guard let i = Int(v.trimmingCharacters(in: .whitespaces)) else {
                throw ScanError.shardEnvironment("\(name)=\(v) is not an integer")
            }
            return i
        }
        let declared = try int("WEIGHTMARK_SHARDS")
        let index: Int, engineCount: Int?, engine: String
        if let i = try int("JOB_COMPLETION_INDEX") {
            (index, engineCount, engine) = (i, nil, "Kubernetes Indexed Job (JOB_COMPLETION_INDEX)")
        } else if let i = try int("AWS_BATCH_JOB_ARRAY_INDEX") {
            (index, engineCount, engine) = (i, try int("AWS_BATCH_JOB_ARRAY_SIZE"), "AWS Batch array job (AWS_BATCH_JOB_ARRAY_INDEX)")
        } else if let id = try int("SLURM_ARRAY_TASK_ID") {
            (index, engineCount, engine) = (id - (try int("SLURM_ARRAY_TASK_MIN") ?? 0), try int("SLURM_ARRAY_TASK_COUNT"),
                                            "Slurm job array (SLURM_ARRAY_TASK_ID)")
        } else {
            throw ScanError.shardEnvironment("no array index in the environment: --shard auto reads JOB_COMPLETION_INDEX (Kubernetes Indexed Job), AWS_BATCH_JOB_ARRAY_INDEX (AWS Batch) or SLURM_ARRAY_TASK_ID (Slurm); give --shard i/N elsewhere")
        }
        if let declared, let engineCount, declared != engineCount {
            throw ScanError.shardEnvironment("WEIGHTMARK_SHARDS=\(declared) but the \(engine) has \(engineCount) tasks")
        }
        guard let count = declared ?? engineCount else {
            throw ScanError.shardEnvironment("\(engine) gives the index but not the number of shards: set WEIGHTMARK_SHARDS to the Job's completions")
        }
        guard count >= 1, index >= 0, index < count else {
            throw ScanError.shardEnvironment("index \(index) is outside 0..<\(count) (\(engine))")
        }
        return ScanShard(index: index, count: count)
    }

    /// The shard that scans the model at `relativePath`: the first 8 bytes of SHA-256(path) modulo the count.
    public static func owner(of relativePath: String, count: Int) -> Int {
        let digest = Array(SHA256.hash(data: Data(relativePath.utf8)))
        var h: UInt64 = 0
        for b in digest.prefix(8) { h = h << 8 | UInt64(b) }
        return Int(h % UInt64(count))
    }

    public func owns(_ relativePath: String) -> Bool { Self.owner(of: relativePath, count: count) == index }
}

import Foundation

/// Checks a bare pickle file (not a zip) with the restricted unpickler, so a malicious one is reported by the
/// global it would import rather than merely as "unsupported".
enum PickleScan {
    /// Largest bare pickle scanned (a state-dict pickle without its storages is small).
    static let maximumBytes = 64 << 20

    static func refuseIfUnsafe(path: String) throws {
        let mapping = try MappedFile(path: path)
        guard mapping.size <= maximumBytes else { return }
        do {
            _ = try mapping.withBytes { (b) throws(PickleError) in try RestrictedUnpickler.unpickle(b) }
        } catch {
            if case .unsafeGlobal = error {
                throw TensorIOError.invalidPickle(path: path, entry: "pickle stream", reason: error)
            }
        }
    }
}

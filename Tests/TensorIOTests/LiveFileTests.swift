import Foundation
import Testing
@testable import TensorIO
import WeightMarkTestSupport

/// A model file that shrinks while it is mapped (a mirror re-synced in place) must never kill the process with SIGBUS:
/// the read finishes and the file is reported as changed.
@Suite("Files that change while mapped")
struct LiveFileTests {
    @Test("reading past the new end of a truncated mapping absorbs the SIGBUS and reports the file as changed")
    func truncatedMapping() throws {
        let dir = Fixtures.temporaryDirectory("live")
        let path = dir + "/big.bin"
        let count = 1 << 20
        Fixtures.write([UInt8](repeating: 7, count: count), to: path)
        let file = try MappedFile(path: path)
        try file.checkUnchanged()
        let before = MappedFile.faultCount
        #expect(truncate(path, 4096) == 0)
        // Every page past the first one now raises SIGBUS when touched.
        let sum = file.withBytes { bytes in bytes.reduce(0) { $0 + Int($1) } }
        #expect(sum == 7 * 4096, "pages past the end read as zeros")
        #expect(MappedFile.faultCount > before)
        #expect(MappedFile.faultedPaths.contains(path))
        #expect(throws: TensorIOError.self) { try file.checkUnchanged() }
        #expect(throws: TensorIOError.self) { try MappedFile.checkNoFaults(since: before, in: path) }
        #expect(throws: TensorIOError.self) { try MappedFile.checkNoFaults(since: before, in: dir) }
        // Another model read by the same process at the same time is not affected by this file's fault.
        let other = Fixtures.temporaryDirectory("live-other")
        try MappedFile.checkNoFaults(since: before, in: other)
        try MappedFile.checkNoFaults(since: before, in: other + "/model.safetensors")
    }

    @Test("a safetensors model truncated after it was opened: reading its tensors is an error naming the file, not a crash")
    func truncatedModel() throws {
        let dir = Fixtures.temporaryDirectory("live-model")
        let path = dir + "/model.safetensors"
        try Fixtures.writeSmallModel(to: path)
        let model = try SafetensorsModel(path: path)
        let before = MappedFile.faultCount
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as! Int
        #expect(truncate(path, off_t(size / 3)) == 0)
        for t in model.tensors { _ = try? model.floats(of: t) }
        let error = #expect(throws: TensorIOError.self) { try MappedFile.checkNoFaults(since: before, in: path) }
        let message = error.map { "\($0)" } ?? ""
        #expect(message.contains(path), "\(message)")
    }
}

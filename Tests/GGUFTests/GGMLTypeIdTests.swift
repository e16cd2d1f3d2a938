import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// ggml type ids: the newest ones llama.cpp writes parse and decode; an id newer than WeightMark is reported as
/// such, not as a broken file.
@Suite("ggml type ids, old and new")
struct GGMLTypeIdTests {
    @Test("NVFP4 (40), Q1_0 (41) and Q2_0 (42) tensors parse with their block sizes and decode",
          arguments: [(GGMLType.nvfp4, 40, 64, 36), (.q1_0, 41, 128, 18), (.q2_0, 42, 64, 18)])
    func newestTypesParse(type: GGMLType, id: UInt32, block: Int, bytes: Int) throws {
        #expect(type.rawValue == id)
        #expect(type.blockLayout == (block, bytes))
        let dir = Fixtures.temporaryDirectory("newtypes")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var b = GGUFBuilder()
        b.header(tensors: 1, kvs: 0)
        b.tensor("w", ne: [UInt64(block * 2), 3], type: id, offset: 0)
        b.pad()
        var data = [UInt8](repeating: 0x11, count: 6 * bytes)
        if type != .nvfp4 { for blockStart in stride(from: 0, to: data.count, by: bytes) { data[blockStart] = 0; data[blockStart + 1] = 0x3C } }  // d = 1.0
        b.bytes += data
        Fixtures.write(b.bytes, to: dir + "/n.gguf")
        let f = try GGUFFile(path: dir + "/n.gguf")
        let t = try #require(f.tensor(named: "w"))
        #expect(t.type == type && t.byteCount == 6 * bytes)
        let values = try f.floats(of: t)
        #expect(values.count == block * 6 && values.allSatisfy(\.isFinite) && values.contains { $0 != 0 })
    }

    @Test("an unknown type id names the tensor and the id, and does not call the file invalid")
    func unknownIdIsNotBlamedOnTheFile() throws {
        let dir = Fixtures.temporaryDirectory("unknowntype")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var b = GGUFBuilder()
        b.header(tensors: 1, kvs: 0)
        b.tensor("a", ne: [8], type: 77, offset: 0)
        b.pad(); b.data(32)
        Fixtures.write(b.bytes, to: dir + "/u.gguf")
        do {
            _ = try GGUFFile(path: dir + "/u.gguf")
            Issue.record("accepted a tensor of unknown type 77")
        } catch let e as TensorIOError {
            guard case .unknownGGMLType(tensor: "a", id: 77, path: dir + "/u.gguf") = e else { Issue.record("unexpected \(e)"); return }
            #expect(e.description.contains("type id 77") && e.description.contains("newer than WeightMark"))
            #expect(!e.description.contains("not a valid GGUF"))
        }
    }
}

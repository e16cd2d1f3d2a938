import Foundation
import LinearAlgebra
import Testing
import TensorIO
import WeightMarkTestSupport

/// "Never a confident answer from what was not read": a model most of whose matrices are stored in a type this
/// version cannot decode gets "inconclusive" (exit 3) from detect, trace and scan, never "not detected" (exit 1).
@Suite("Read coverage: inconclusive instead of not detected")
struct ReadCoverageTests {
    /// 31 matrices of 256×256, the first `unreadable` of them stored as packed U32 [256, 32] (as a 4-bit quantizer
    /// this version does not read would store them), the rest F32.
    static func writeModel(to path: String, unreadable: Int) throws {
        var tensors: [OutputTensor] = []
        var rng = SplitMix64(seed: 99)
        for i in 0..<31 {
            let name = "model.layers.\(i).mlp.up_proj.weight"
            if i < unreadable {
                var bytes = [UInt8](repeating: 0, count: 256 * 32 * 4)
                for j in bytes.indices { bytes[j] = UInt8(truncatingIfNeeded: rng.next()) }
                tensors.append(OutputTensor(name: name, dtype: .u32, shape: [256, 32], bytes: bytes))
            } else {
                var values = [Float](repeating: 0, count: 256 * 256)
                for j in values.indices {
                    let u = Double(rng.next() >> 11) / 9_007_199_254_740_992.0
                    values[j] = Float(u - 0.5) * 0.1
                }
                tensors.append(OutputTensor(name: name, dtype: .f32, shape: [256, 256], bytes: FloatConversion.encode(values, as: .f32)))
            }
        }
        try SafetensorsWriter.write(tensors, metadata: [("format", "pt")], to: path, overwrite: true)
    }

    @Test("29 of 31 matrices unreadable: detect and scan say inconclusive (exit 3) and name what was not read; 2 of 31: not detected (exit 1)")
    func inconclusive() throws {
        let dir = Fixtures.temporaryDirectory("coverage")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try Fixtures.weightmark(["keygen", "--out", dir + "/owner.key"]).status == 0)
        try FileManager.default.createDirectory(atPath: dir + "/packed", withIntermediateDirectories: true)
        try Self.writeModel(to: dir + "/packed/model.safetensors", unreadable: 29)
        try Self.writeModel(to: dir + "/mostly.safetensors", unreadable: 2)

        let d = try Fixtures.weightmark(["detect", dir + "/packed", "--key", dir + "/owner.key"])
        #expect(d.status == 3, "\(d.stdout)\n\(d.stderr)")
        #expect(d.stdout.hasPrefix("INCONCLUSIVE") && d.stdout.contains("29 of 31 candidate matrices") && d.stdout.contains("U32"), "\(d.stdout)")
        let j = try Fixtures.weightmark(["detect", dir + "/packed", "--key", dir + "/owner.key", "--json", "--quiet"])
        #expect(j.status == 3)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(j.stdout.utf8)) as? [String: Any])
        #expect(report["inconclusive"] as? Bool == true && report["detected"] as? Bool == false)
        #expect((report["coverage"] as? [String: Any])?["unreadTensors"] as? Int == 29)

        let m = try Fixtures.weightmark(["detect", dir + "/mostly.safetensors", "--key", dir + "/owner.key", "--json", "--quiet"])
        #expect(m.status == 1, "2 of 31 unread (6%) is within the 10% rule: \(m.stdout)")

        let s = try Fixtures.weightmark(["scan", dir + "/packed", "--key", dir + "/owner.key", "--quiet"])
        #expect(s.status == 3, "\(s.stdout)\n\(s.stderr)")
        let first = try #require(s.stdout.split(separator: "\n").first)
        let record = try #require(try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any])
        #expect(record["status"] as? String == "inconclusive" && (record["reason"] as? String ?? "").contains("could not be decoded"), "\(record)")
    }
}

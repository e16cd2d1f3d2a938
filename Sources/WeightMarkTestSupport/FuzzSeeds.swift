import Foundation

/// The committed seed corpora of the libFuzzer targets (`Fuzz/<Target>/seeds/`), kept byte-identical to the
/// inputs of the malformed-file test suites, which own them.
public enum FuzzSeeds {
    /// Environment variable that makes `mismatches` rewrite the seed folder first.
    public static let writeVariable = "WEIGHTMARK_WRITE_FUZZ_SEEDS"

    public static func directory(target: String) -> String { Fixtures.packageRoot + "/Fuzz/\(target)/seeds" }

    /// A seed's file name: the case name in lowercase, runs of anything but letters and digits as one "-".
    public static func fileName(_ caseName: String) -> String {
        var out = ""
        for c in caseName.lowercased().unicodeScalars {
            if CharacterSet.alphanumerics.contains(c) && c.isASCII { out.unicodeScalars.append(c) } else if !out.hasSuffix("-") { out += "-" }
        }
        while out.hasSuffix("-") { out.removeLast() }
        return out
    }

    /// What differs between `seeds` and the files in `Fuzz/<target>/seeds/`: one line per missing, different or
    /// extra file (empty when they agree).
    ///
    /// With `WEIGHTMARK_WRITE_FUZZ_SEEDS=1` the folder is rewritten to match first, and the differences found
    /// before are still returned, so that run fails and the next one (which must pass) proves the files.
    public static func mismatches(target: String, seeds: [(name: String, bytes: [UInt8])]) -> [String] {
        let dir = directory(target: target)
        var problems: [String] = []
        var expected: [String: [UInt8]] = [:]
        for s in seeds {
            let file = fileName(s.name)
            if expected.updateValue(s.bytes, forKey: file) != nil { problems.append("two seeds are named \(file)") }
        }
        let present = Set((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
        for (file, bytes) in expected.sorted(by: { $0.key < $1.key }) {
            guard let data = FileManager.default.contents(atPath: dir + "/" + file) else {
                problems.append("\(dir)/\(file) is missing"); continue
            }
            if [UInt8](data) != bytes { problems.append("\(dir)/\(file) differs from its test case") }
        }
        for file in present.sorted() where expected[file] == nil { problems.append("\(dir)/\(file) belongs to no test case") }
        if !problems.isEmpty, ProcessInfo.processInfo.environment[writeVariable] == "1" {
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for file in present where expected[file] == nil { try? FileManager.default.removeItem(atPath: dir + "/" + file) }
            for (file, bytes) in expected { Fixtures.write(bytes, to: dir + "/" + file) }
        }
        return problems
    }
}

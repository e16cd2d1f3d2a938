import Foundation
import Testing
import WeightMarkTestSupport

/// docs/ARCHITECTURE.md, "Concurrency model": every `@unchecked Sendable` and `nonisolated(unsafe)` left in Sources/
/// states, in the comment directly above it, the invariant that makes it safe ("Sendable: …" or "Unsafe: …").
@Suite("Unchecked concurrency carries its invariant")
struct ConcurrencyNoteTests {
    @Test("every @unchecked Sendable and nonisolated(unsafe) in Sources/ has a Sendable:/Unsafe: comment directly above")
    func invariantsStated() throws {
        let root = Fixtures.packageRoot + "/Sources"
        var missing: [String] = [], found = 0
        let files = FileManager.default.enumerator(atPath: root)!.compactMap { $0 as? String }.filter { $0.hasSuffix(".swift") }
        for file in files {
            let lines = try String(contentsOfFile: root + "/" + file, encoding: .utf8).components(separatedBy: "\n")
            for (i, line) in lines.enumerated() {
                let code = line.components(separatedBy: "//").first ?? ""
                guard code.contains("@unchecked Sendable") || code.contains("nonisolated(unsafe)") else { continue }
                found += 1
                // The comment block directly above (attributes between it and the declaration are allowed).
                var j = i - 1, stated = false
                while j >= 0 {
                    let t = lines[j].trimmingCharacters(in: .whitespaces)
                    if t.hasPrefix("@") { j -= 1; continue }
                    guard t.hasPrefix("//") else { break }
                    if t.contains("Sendable:") || t.contains("Unsafe:") { stated = true; break }
                    j -= 1
                }
                if !stated { missing.append("\(file):\(i + 1)") }
            }
        }
        #expect(found >= 20, "the scan found only \(found) declarations: is it looking in the right place?")
        #expect(missing.isEmpty, "no invariant stated above: \(missing.joined(separator: ", "))")
    }
}

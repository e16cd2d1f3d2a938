import Foundation
import Testing
import WeightMarkTestSupport

/// docs/ARCHITECTURE.md and Package.swift must tell the same story: every module has its row in the table, the row's
/// "may import" column is exactly the target's declared dependencies, and every module a target's sources import is
/// declared (not reached through another target by accident).
@Suite("docs/ARCHITECTURE.md matches Package.swift")
struct ArchitectureDocTests {
    /// Package.swift's products as the doc names them.
    static let productNames = ["Crypto": "swift-crypto", "SwiftASN1": "swift-asn1", "X509": "swift-certificates",
                               "ArgumentParser": "swift-argument-parser"]
    /// Modules the toolchain provides.
    static let toolchain: Set<String> = ["Foundation", "Dispatch", "Glibc", "Darwin", "Testing", "XCTest"]

    struct Target { var name: String; var kind: String; var path: String?; var dependencies: Set<String> }

    /// The package's targets, from `swift package dump-package` (run with its own scratch folder, so it never waits
    /// for the lock of the build that runs this test).
    static func targets() throws -> [Target] {
        let scratch = Fixtures.temporaryDirectory("dump-package")
        let json = try Fixtures.run("/usr/bin/env", ["swift", "package", "--package-path", Fixtures.packageRoot,
                                                     "--scratch-path", scratch, "dump-package"])
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as! [String: Any]
        return (object["targets"] as! [[String: Any]]).map { t in
            var dependencies: Set<String> = []
            for d in t["dependencies"] as? [[String: Any]] ?? [] {
                if let byName = d["byName"] as? [Any], let n = byName.first as? String { dependencies.insert(n) }
                if let target = d["target"] as? [Any], let n = target.first as? String { dependencies.insert(n) }
                if let product = d["product"] as? [Any], let n = product.first as? String { dependencies.insert(productNames[n] ?? n) }
            }
            return Target(name: t["name"] as! String, kind: t["type"] as! String, path: t["path"] as? String, dependencies: dependencies)
        }
    }

    /// The table rows of docs/ARCHITECTURE.md: module → the names in its "may import" column.
    static func documented() throws -> [String: Set<String>] {
        let doc = try String(contentsOfFile: Fixtures.packageRoot + "/docs/ARCHITECTURE.md", encoding: .utf8)
        var rows: [String: Set<String>] = [:]
        for line in doc.split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 4 else { continue }
            let module = cells[1].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            let names = cells[3].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "`")) }
            rows[module] = Set(names.filter { !$0.isEmpty && $0 != "libc" })
        }
        return rows
    }

    @Test("every library and executable module has a row whose imports are its declared dependencies, and every import is declared")
    func docMatchesPackage() throws {
        let targets = try Self.targets()
        let rows = try Self.documented()
        let modules = targets.filter { $0.kind == "regular" || ($0.kind == "executable" && $0.path == nil) }
        #expect(modules.count >= 15, "\(modules.map(\.name))")
        let known = Set(targets.map(\.name)).union(Self.productNames.keys)
        for m in modules {
            guard let row = rows[m.name] else {
                Issue.record("docs/ARCHITECTURE.md has no row for module \(m.name)")
                continue
            }
            if m.name != "weightmark" {
                #expect(row == m.dependencies, "\(m.name): the doc says it may import \(row.sorted()), Package.swift declares \(m.dependencies.sorted())")
            }
            // What the sources import must be declared (a module reached only through another target is a mistake).
            let folder = Fixtures.packageRoot + "/Sources/" + m.name
            let imported = Self.imports(under: folder).filter { known.contains($0) }
            let declared = Set(m.dependencies.map { d in Self.productNames.first { $0.value == d }?.key ?? d })
            for i in imported.subtracting(declared) {
                Issue.record("Sources/\(m.name) imports \(i) without declaring it in Package.swift")
            }
        }
        for name in rows.keys where !targets.contains(where: { $0.name == name }) {
            Issue.record("docs/ARCHITECTURE.md has a row for \(name), which Package.swift does not declare")
        }
    }

    /// Modules imported by the Swift files under `folder`.
    static func imports(under folder: String) -> Set<String> {
        var result: Set<String> = []
        guard let files = FileManager.default.enumerator(atPath: folder) else { return [] }
        for case let file as String in files where file.hasSuffix(".swift") {
            guard let text = try? String(contentsOfFile: folder + "/" + file, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n") {
                let words = line.split(separator: " ")
                guard let i = words.firstIndex(of: "import"), i + 1 < words.count,
                      words[..<i].allSatisfy({ $0.hasPrefix("@") || ["public", "internal", "package"].contains(String($0)) }) else { continue }
                result.insert(String(words[i + 1]))
            }
        }
        return result.subtracting(toolchain)
    }
}

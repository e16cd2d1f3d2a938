import Foundation
import Testing
import Watermarking
import WeightMarkTestSupport

/// WeightMark used as a library by another Swift package, the way a model hub, an upload service or a CI gate would:
/// `Examples/MarkAndCheck` depends on it by version from a git URL. The test publishes the working tree as a tagged
/// git repository in a temporary folder, points the example at it, builds it with SwiftPM (which refuses a dependency
/// whose products carry unsafe build flags) and runs it: it must embed, detect the mark, and not detect the original.
@Suite("WeightMark as a dependency of another package")
struct ConsumerPackageTests {
    @Test("Examples/MarkAndCheck builds against a tagged copy of WeightMark and embeds and detects in-process")
    func consumerPackage() throws {
        let root = Fixtures.packageRoot
        let work = Fixtures.temporaryDirectory("consumer")
        let repo = work + "/weightmark", consumer = work + "/MarkAndCheck"
        let version = WeightMarkVersion.toolVersion

        // The files a clone would hold (tracked, plus new files not ignored), committed and tagged as a release.
        let listed = try Fixtures.run("/usr/bin/env", ["git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        let files = listed.split(separator: "\0").map(String.init).filter { FileManager.default.fileExists(atPath: root + "/" + $0) }
        #expect(files.contains("Package.swift"))
        for file in files {
            let destination = repo + "/" + file
            try FileManager.default.createDirectory(atPath: (destination as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: root + "/" + file, toPath: destination)
        }
        let git = ["git", "-C", repo, "-c", "user.name=WeightMark tests", "-c", "user.email=tests@example.invalid", "-c", "commit.gpgsign=false"]
        _ = try Fixtures.run("/usr/bin/env", ["git", "init", "-q", repo])
        _ = try Fixtures.run("/usr/bin/env", git + ["add", "-A"])
        _ = try Fixtures.run("/usr/bin/env", git + ["commit", "-q", "-m", "release \(version)"])
        _ = try Fixtures.run("/usr/bin/env", git + ["tag", version])

        // The example package, pointed at the tagged repository instead of its placeholder URL.
        try FileManager.default.copyItem(atPath: root + "/Examples/MarkAndCheck", toPath: consumer)
        let manifestPath = consumer + "/Package.swift"
        let manifest = try String(contentsOfFile: manifestPath, encoding: .utf8)
        #expect(manifest.contains("https://example.invalid/weightmark.git"))
        try manifest.replacingOccurrences(of: "https://example.invalid/weightmark.git", with: "file://" + repo)
            .replacingOccurrences(of: #"from: "0.3.0""#, with: #"from: "\#(version)""#)
            .write(toFile: manifestPath, atomically: true, encoding: .utf8)
        let build = try Fixtures.runProcess("/usr/bin/env", ["swift", "build", "--package-path", consumer])
        #expect(build.status == 0, "the consumer package does not build:\n\(build.stdout.suffix(3000))\n\(build.stderr.suffix(3000))")
        guard build.status == 0 else { return }

        let original = work + "/original", marked = work + "/marked"
        try Fixtures.writeSmallLlama(to: original, layers: 4, hidden: 512, ffn: 1536)
        let r = try Fixtures.runProcess(consumer + "/.build/debug/MarkAndCheck", [original, marked])
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix(marked + ": detected") }, "\(r.stdout)")
        #expect(lines.contains { $0.hasPrefix(original + ": not detected") }, "\(r.stdout)")
    }
}

import ArgumentParser
import Foundation

/// Outputs never overlap inputs: an output that is an input, contains one (`--out parent` of `parent/model`) or lies
/// inside one (`--out model/marked`) is refused, with or without --force, after resolving symbolic links, so
/// replacing the output can never delete or alter what the user gave as input.
enum OutputPaths {
    /// The absolute path with every symbolic link of its existing part resolved (the rest appended as written).
    static func resolved(_ path: String) -> String {
        var url = URL(fileURLWithPath: path).standardizedFileURL
        var tail: [String] = []
        while !FileManager.default.fileExists(atPath: url.path), url.path != "/" {
            tail.insert(url.lastPathComponent, at: 0)
            url.deleteLastPathComponent()
        }
        var base = url.resolvingSymlinksInPath().path
        for t in tail { base = (base as NSString).appendingPathComponent(t) }
        return base
    }

    static func isSameOrInside(_ a: String, _ b: String) -> Bool { a == b || a.hasPrefix(b.hasSuffix("/") ? b : b + "/") }

    /// Refuses `output` (named by `flag`) when it is, contains or is inside any of `inputs`.
    static func refuseOverlap(output: String, flag: String = "--out", inputs: [String]) throws {
        let o = resolved(output)
        for input in inputs where !input.isEmpty {
            let i = resolved(input)
            if o == i {
                throw ValidationError("\(flag) \(output) is the input \(input): WeightMark never writes over its input; choose another path.")
            }
            if isSameOrInside(i, o) {
                throw ValidationError("\(flag) \(output) contains the input \(input): writing it would replace the input. Choose a path outside \(input)'s folder.")
            }
            if isSameOrInside(o, i) {
                throw ValidationError("\(flag) \(output) is inside the input \(input): the copy would be written into the model it was made from. Choose a path outside \(input).")
            }
        }
    }
}

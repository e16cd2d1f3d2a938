import Foundation

/// Parsed `key=value` parameters of one attack, with typed, validated access.
public struct AttackParameters: Sendable {
    public let attack: String
    private var values: [String: String]
    private var used: Set<String> = []

    public init(attack: String, values: [String: String]) {
        self.attack = attack; self.values = values
    }

    public mutating func double(_ key: String, default value: Double, in range: ClosedRange<Double>) throws -> Double {
        try number(key, default: value, in: range, kind: "a number")
    }

    public mutating func int(_ key: String, default value: Int, in range: ClosedRange<Int>) throws -> Int {
        try number(key, default: value, in: range, kind: "an integer")
    }

    private mutating func number<T: LosslessStringConvertible & Comparable>(_ key: String, default value: T,
                                                                            in range: ClosedRange<T>, kind: String) throws -> T {
        used.insert(key)
        guard let text = values[key] else { return value }
        guard let v = T(text), range.contains(v) else {
            throw AttackError.invalidParameter(attack: attack, parameter: key, reason: "must be \(kind) in \(range.lowerBound)...\(range.upperBound), got \"\(text)\"")
        }
        return v
    }

    public mutating func choice(_ key: String, default value: String, among options: [String]) throws -> String {
        used.insert(key)
        guard let text = values[key] else { return value }
        guard options.contains(text) else {
            throw AttackError.invalidParameter(attack: attack, parameter: key, reason: "must be one of \(options.joined(separator: ", ")), got \"\(text)\"")
        }
        return text
    }

    public mutating func string(_ key: String) -> String? {
        used.insert(key)
        return values[key]
    }

    /// Throws if a parameter was given that the attack never asked for.
    public func checkAllUsed() throws {
        for key in values.keys.sorted() where !used.contains(key) {
            throw AttackError.unknownParameter(attack: attack, parameter: key, allowed: used.sorted())
        }
    }
}

/// Parses attack specs: `name[:k=v[,k=v…]]`, chained with commas (`prune:fraction=0.5,int4:group=128`):
/// a comma-separated token containing `:` or no `=` starts a new attack.
public enum AttackSpecParser {
    public static func parse(_ text: String) throws -> [(name: String, parameters: [String: String])] {
        var out: [(name: String, parameters: [String: String])] = []
        for raw in text.split(separator: ",", omittingEmptySubsequences: true) {
            let token = raw.trimmingCharacters(in: .whitespaces)
            guard !token.isEmpty else { continue }
            if let colon = token.firstIndex(of: ":") {
                let name = String(token[..<colon])
                var params: [String: String] = [:]
                let rest = token[token.index(after: colon)...]
                if !rest.isEmpty { try add(String(rest), to: &params, attack: name) }
                out.append((name, params))
            } else if token.contains("=") {
                guard !out.isEmpty else { throw AttackError.unknownAttack(token) }
                try add(token, to: &out[out.count - 1].parameters, attack: out[out.count - 1].name)
            } else {
                out.append((token, [:]))
            }
        }
        guard !out.isEmpty else { throw AttackError.emptySpec }
        return out
    }

    private static func add(_ kv: String, to params: inout [String: String], attack: String) throws {
        let parts = kv.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty else {
            throw AttackError.invalidParameter(attack: attack, parameter: kv, reason: "is not of the form key=value")
        }
        params[parts[0]] = parts[1]
    }
}

/// Formats a number compactly for specs and tables (0.5, 1e-3, 128).
func compact(_ v: Double) -> String {
    if v == v.rounded() && abs(v) < 1e9 { return String(Int(v)) }
    var s = String(v)
    if s.hasSuffix(".0") { s.removeLast(2) }
    return s
}

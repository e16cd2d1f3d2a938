import Foundation

/// The committed results of `make robustness` (Benchmarks/Results/), read by the tests that hold the tool to them, so
/// each number has one home: the file the benchmark writes. A test never copies a number from these tables by hand.
public enum CommittedResults {
    public struct Row: Sendable {
        public var family: String
        public var attack: String
        public var blindZ: Double
        public var informedZ: Double
    }

    public struct Table: Sendable {
        /// δ per marked tensor from the header line ("strength: δ = 4.49e-03 …").
        public var delta: Double
        public var rows: [Row]
        public func row(family: String, attack: String) -> Row? { rows.first { $0.family == family && $0.attack == attack } }
    }

    public enum ReadError: Error, CustomStringConvertible {
        case malformed(String)
        public var description: String {
            switch self { case .malformed(let s): "Benchmarks/Results: \(s) (regenerate it with `make robustness`)" }
        }
    }

    /// A robustness table written by `weightmark bench` (`results*.md`), e.g. "minilm-robustness-uniform.md".
    public static func robustness(_ name: String) throws -> Table {
        let path = Fixtures.packageRoot + "/Benchmarks/Results/" + name
        let text = try String(contentsOfFile: path, encoding: .utf8)
        guard let strength = text.split(separator: "\n").first(where: { $0.contains("strength: δ = ") }),
              let range = strength.range(of: "δ = "),
              let delta = Double(strength[range.upperBound...].prefix { !$0.isWhitespace }) else {
            throw ReadError.malformed("\(name) has no 'strength: δ = …' line")
        }
        var header: [String]?
        var rows: [Row] = []
        for line in text.split(separator: "\n") where line.hasPrefix("|") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast()
                .map { $0.trimmingCharacters(in: .whitespaces) }
            if header == nil { header = cells; continue }
            if cells.allSatisfy({ $0.allSatisfy { $0 == "-" || $0 == ":" } }) { continue }
            guard let h = header, let b = h.firstIndex(of: "blind Z"), let i = h.firstIndex(where: { $0.hasPrefix("informed Z") }),
                  cells.count == h.count, let blind = leadingNumber(cells[b]), let informed = leadingNumber(cells[i]) else {
                throw ReadError.malformed("\(name): cannot read the row '\(line)'")
            }
            rows.append(Row(family: cells[0], attack: cells[1], blindZ: blind, informedZ: informed))
        }
        guard !rows.isEmpty else { throw ReadError.malformed("\(name) has no table rows") }
        return Table(delta: delta, rows: rows)
    }

    /// The number a cell starts with: "327.9 (unaligned 332.4)" is 327.9, the aligned reading the column is named for.
    static func leadingNumber(_ cell: String) -> Double? {
        Double(cell.prefix { !$0.isWhitespace && $0 != "(" })
    }
}

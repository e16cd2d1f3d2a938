import Foundation
import TensorIO

/// How much of a suspect's candidate weights were actually read (docs/FORMAT.md, "Inconclusive").
///
/// A candidate is a 2-D tensor the selection takes, or would take were it stored in a type this version decodes
/// (packed integers of a quantizer it does not know, an unknown ggml type). A verdict of "not detected" is only given
/// when at most `inconclusiveShare` of the candidates — counted both as tensors and as stored elements, whichever
/// share is larger — could not be decoded; otherwise the answer is "inconclusive" (exit 3), never "not detected".
/// A detection stands whatever was not read: its bound holds for the tensors that were.
public struct ReadCoverage: Sendable, Codable, Equatable {
    /// Candidate matrices (readable or not).
    public var candidateTensors: Int
    /// Their values (a packed integer element counted as the 4-bit values it can hold).
    public var candidateElements: Int
    /// Candidates that could not be decoded.
    public var unreadTensors: Int
    public var unreadElements: Int
    /// Up to 8 of them, with their storage.
    public var unreadExamples: [SkippedTensor]
    /// The distinct storages that could not be decoded.
    public var unreadStorages: [String]

    /// Above this share of unread candidates a negative verdict is "inconclusive".
    public static let inconclusiveShare = 0.10

    /// The larger of the unread shares by tensor count and by elements.
    public var unreadShare: Double {
        let byCount = candidateTensors > 0 ? Double(unreadTensors) / Double(candidateTensors) : 0
        let byElements = candidateElements > 0 ? Double(unreadElements) / Double(candidateElements) : 0
        return max(byCount, byElements)
    }

    /// Whether too much was left unread for a negative verdict.
    public var isIncomplete: Bool { unreadShare > Self.inconclusiveShare }

    /// The coverage of `suspect` under `selection`.
    public static func of(_ suspect: any TensorSource, selection: TensorSelection) -> ReadCoverage {
        var c = ReadCoverage(candidateTensors: 0, candidateElements: 0, unreadTensors: 0, unreadElements: 0, unreadExamples: [], unreadStorages: [])
        for t in suspect.sourceTensors {
            var decodable = t
            if !t.isFloating, t.shape.count == 2 {
                // Packed integers hold several values each: counted as 4-bit values (the densest common packing), so
                // a packed matrix is judged at the size it stands for.
                decodable.isFloating = true
                let (cols, overflow) = t.shape[1].multipliedReportingOverflow(by: packedValues(t.storage))
                decodable.shape[1] = overflow ? Int.max / 4 : cols
            }
            guard selection.selectsGeometry(decodable) else { continue }
            let elements = decodable.shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max / 4 : $0 * $1 }
            c.candidateTensors += 1
            c.candidateElements = c.candidateElements.addingReportingOverflow(elements).overflow ? Int.max / 4 : c.candidateElements + elements
            if !t.isFloating {
                c.unreadTensors += 1
                c.unreadElements = c.unreadElements.addingReportingOverflow(elements).overflow ? Int.max / 4 : c.unreadElements + elements
                if c.unreadExamples.count < 8 { c.unreadExamples.append(SkippedTensor(name: t.name, reason: "stored as \(t.storage)")) }
                if !c.unreadStorages.contains(t.storage) { c.unreadStorages.append(t.storage) }
            }
        }
        return c
    }

    /// How many 4-bit values one stored element of `storage` can hold (1 for anything that is not a packed integer).
    static func packedValues(_ storage: String) -> Int {
        switch storage.uppercased() {
        case "U32", "I32": return 8
        case "U16", "I16": return 4
        case "U8", "I8": return 2
        case "U64", "I64": return 16
        default: return 1
        }
    }

    /// One line for a human report.
    public var summary: String {
        String(format: "%d of %d candidate matrices (%.0f%%) could not be decoded (stored as %@)", unreadTensors, candidateTensors,
               unreadShare * 100, unreadStorages.joined(separator: ", "))
    }

    /// What to do about it.
    public static let advice = "convert the copy to safetensors or GGUF with the library that wrote it (dequantized), then detect again; "
        + "`weightmark inspect` lists what each tensor is stored as"
}

extension DetectionReport {
    /// Records what was read and, when the verdict is negative with too much unread, marks it inconclusive.
    public mutating func applyCoverage(_ coverage: ReadCoverage) {
        self.coverage = coverage
        inconclusive = (!detected && coverage.isIncomplete) ? true : nil
    }

    /// "detected", "not detected" or "inconclusive".
    public var verdict: String { detected ? "detected" : (inconclusive == true ? "inconclusive" : "not detected") }
}

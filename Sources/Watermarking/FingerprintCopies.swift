import Foundation
import LinearAlgebra
import TensorIO

/// What a recipient's manifest records about its fingerprint (no secret: the id and the code's parameters).
public struct FingerprintRecord: Sendable, Codable, Equatable {
    public var recipient: String
    public var scheme = "tardos-symmetric-soft/v1"
    /// Code length m.
    public var positions = FingerprintCode.positions
    /// Weights per row segment that share a position.
    public var segment = FingerprintCode.segment
    /// Tardos cutoff t (biases in [t, 1 − t], quantized to k/256).
    public var cutoff = Double(FingerprintCode.minimumThreshold) / 256
    /// Part f of δ given to the fingerprint.
    public var share: Double
    /// Owner mark δ_o = sqrt(1 − f²)·δ, identical in every copy.
    public var ownerDelta: Double
    /// Fingerprint δ_f = f·δ.
    public var fingerprintDelta: Double

    public init(recipient: String, share: Double, delta: Double) {
        self.recipient = recipient
        self.share = share
        ownerDelta = delta * (1 - share * share).squareRoot()
        fingerprintDelta = delta * share
    }
}

/// Default part f of δ given to the fingerprint: the owner mark keeps sqrt(1 − f²) ≈ 0.92 of its blind Z.
public let defaultFingerprintShare = 0.4

/// Personal copies computed in memory (tests, `bench --collusion`): the same owner mark and fingerprint as
/// `embed --recipient`, with the owner-marked matrices computed once and each fingerprint added per copy.
public struct FingerprintedCopies: Sendable {
    /// Selected matrices of the original, in file order.
    public let names: [String]
    public let shapes: [[Int]]
    /// Owner-marked values (shared by every copy).
    public let ownerMarked: [[Float]]
    /// Fingerprint scale β_f = δ_f‖W‖/sqrt(m·n) per matrix.
    public let fingerprintScale: [Float]
    public let code: FingerprintCode
    public let share: Double
    public let delta: Double

    /// Marks the selected matrices of `model` with the owner mark at δ_o (the plan's δ for default options).
    public init(model: SafetensorsModel, key: WatermarkKey, share: Double = defaultFingerprintShare,
                options: EmbedOptions = EmbedOptions()) throws {
        precondition(options.shaping == .uniform && options.format == .v2, "fingerprints need uniform shaping and format v2")
        let plan = try Embedder.plan(model, options: options)
        let tiles = try TileCarriers(secret: key.secret)
        let ownerDelta = plan.delta * (1 - share * share).squareRoot()
        var names: [String] = [], shapes: [[Int]] = [], marked: [[Float]] = [], scales: [Float] = []
        for e in plan.entries {
            let t = e.tensor
            var w = Matrix(rows: t.shape[0], cols: t.shape[1], storage: try model.floats(of: t))
            model.release(t)
            let norm = Double(w.frobeniusNorm)
            try Embedder.mark(&w, tiles: tiles, shaping: .uniform, delta: ownerDelta)
            names.append(t.name); shapes.append(t.shape); marked.append(w.storage)
            scales.append(Float(plan.delta * share * norm / Double(w.count).squareRoot()))
        }
        self.names = names; self.shapes = shapes; ownerMarked = marked; fingerprintScale = scales
        code = FingerprintCode(secret: key.secret)
        self.share = share
        delta = plan.delta
    }

    /// The copy of `recipient`: owner-marked matrices plus its fingerprint.
    public func copy(for recipient: String) -> [(name: String, shape: [Int], values: [Float])] {
        let f = RecipientFingerprint(code: code, recipient: recipient, share: share)
        return names.indices.map { k in
            var v = ownerMarked[k]
            let (m, n) = (shapes[k][0], shapes[k][1])
            v.withUnsafeMutableBufferPointer { f.add(rows: 0..<m, cols: n, scale: fingerprintScale[k], into: $0.baseAddress!) }
            return (names[k], shapes[k], v)
        }
    }
}

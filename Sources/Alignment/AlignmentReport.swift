/// What alignment found: the `alignment` block of `detect --reference --json` and of `weightmark align --json`.
///
/// It says what the leaker did (which layers' units or heads were permuted, rescaled, dropped or duplicated, and
/// whether the residual stream was rotated), and how well the aligned suspect fits the reference.
public struct AlignmentReport: Codable, Sendable, Equatable {
    /// `bert` or `llama`; nil when the names were not recognized (then nothing was aligned).
    public var layout: String?
    /// Whether any tensor of the suspect was rewritten.
    public var changed: Bool
    /// Why alignment did less than everything (no layout, unknown head count, shapes that differ …).
    public var notes: [String]
    public var rotation: RotationFinding?
    public var layers: [LayerFinding]
    public var seconds: Double

    public init(layout: String?, changed: Bool, notes: [String], rotation: RotationFinding?, layers: [LayerFinding], seconds: Double) {
        self.layout = layout; self.changed = changed; self.notes = notes; self.rotation = rotation; self.layers = layers; self.seconds = seconds
    }

    /// One line per finding, for the human report.
    public var summaryLines: [String] {
        var out: [String] = []
        if let r = rotation {
            out.append(r.found
                ? String(format: "residual stream rotated (‖Q − I‖/√d = %.2f); undone by Procrustes on the embedding, fit residual %.4f; %d norm weights unfused",
                         r.distanceFromIdentity, r.fitResidual, r.columnsRescaled)
                : String(format: "residual stream not rotated (embedding rows agree, mean cosine %.3f)", r.embeddingCosine))
        }
        for l in layers {
            for g in [l.heads, l.ffn].compactMap({ $0 }) where g.isTransformed {
                var parts: [String] = []
                if g.moved > 0 { parts.append("\(g.moved) of \(g.referenceUnits) \(g.unit)s permuted") }
                if g.rescaled > 0 { parts.append("\(g.rescaled) rescaled (\(g.signFlips) sign flips)") }
                if g.dropped > 0 { parts.append("\(g.dropped) dropped") }
                if g.duplicated > 0 { parts.append("\(g.duplicated) duplicates merged") }
                if g.extra > 0 { parts.append("\(g.extra) extra unmatched") }
                if !g.ambiguous.isEmpty || g.ambiguousCount > 0 { parts.append("\(g.ambiguousCount) ambiguous") }
                let fit = g.residualBefore.map { String(format: "residual %.3f → %.4f", $0, g.residualAfter) } ?? String(format: "residual %.4f", g.residualAfter)
                out.append("layer \(l.layer) \(g.kind): \(parts.joined(separator: ", ")); \(fit)")
            }
        }
        let unmatched = layers.flatMap { [$0.heads, $0.ffn].compactMap { $0 } }.filter(\.leftAsStored).count
        if unmatched > 0 { out.append("\(unmatched) groups searched without a confident match, left as stored") }
        let identical = layers.filter { ($0.heads.map { !$0.isTransformed } ?? true) && !$0.ffn.isTransformed }.count
        if identical > 0 { out.append("\(identical) of \(layers.count) layers already aligned (identity)") }
        return out + notes
    }
}

/// The residual-stream rotation, if any: E_suspect ≈ E_reference · Q.
public struct RotationFinding: Codable, Sendable, Equatable {
    public var found: Bool
    /// Mean cosine of sampled embedding rows with the reference's before alignment (≈ 1 when not rotated).
    public var embeddingCosine: Double
    /// ‖Q − I‖_F / √d (0 when not rotated).
    public var distanceFromIdentity: Double
    /// ‖E_aligned − E_reference‖ / ‖E_reference‖.
    public var fitResidual: Double
    /// Input columns of the matrices after a norm whose scale was divided out again (norm weights fused).
    public var columnsRescaled: Int
}

/// One permutation group of one layer: its attention heads, or its FFN hidden units.
public struct GroupFinding: Codable, Sendable, Equatable {
    /// `heads` or `ffn`.
    public var kind: String
    public var unit: String
    public var suspectUnits: Int
    public var referenceUnits: Int
    /// Reference positions filled by a different suspect unit.
    public var moved: Int
    /// Units whose scale (and sign, where allowed) was divided out.
    public var rescaled: Int
    public var signFlips: Int
    /// Reference units with no suspect unit (left as erasures).
    public var dropped: Int
    /// Suspect units beyond the reference's count merged into the unit they duplicate.
    public var duplicated: Int
    /// Suspect units beyond the reference's count that match none well (ignored).
    public var extra: Int
    /// Reference units whose match is weak or barely better than the runner-up (first 16).
    public var ambiguous: [Int]
    public var ambiguousCount: Int
    /// ‖S − R‖/‖R‖ over the group's matrices as stored (nil when shapes differ) and after alignment.
    public var residualBefore: Double?
    public var residualAfter: Double
    /// Whether the cheap "already aligned" check skipped the search.
    public var identityByCheck: Bool
    /// The search ran but found no confident match (weak similarities, or no better fit than as stored): the group
    /// was left as stored (e.g. an unrelated model, or a matrix stored transposed).
    public var leftAsStored: Bool = false

    public var isTransformed: Bool { moved > 0 || rescaled > 0 || dropped > 0 || duplicated > 0 || extra > 0 }
}

public struct LayerFinding: Codable, Sendable, Equatable {
    public var layer: Int
    public var heads: GroupFinding?
    public var ffn: GroupFinding
}

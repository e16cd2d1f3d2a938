import Foundation

/// Renders sweep results: Markdown/terminal table, CSV, JSON and an SVG figure of small multiples.
public enum SweepRendering {
    static func f(_ v: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", v) }

    static func p(_ log10p: Double) -> String {
        log10p > -3 ? String(format: "%.2g", pow(10, log10p)) : "1e\(Int(floor(log10p)))"
    }

    /// Rows: attack, damage, blind Z, verdict, informed Z, verdict.
    public static func rows(_ points: [SweepPoint]) -> [[String]] {
        points.map { pt in
            [pt.family, pt.label, String(format: "%.4f", pt.damage), function(pt),
             f(pt.blindZ), pt.detectedBlind ? "yes" : "NO",
             f(pt.informedZ) + (pt.informedUnalignedZ.map { " (unaligned \(f($0)))" } ?? ""), pt.detectedInformed ? "yes" : "NO"]
        }
    }

    /// "min / mean" cosine of the probe outputs with the marked model's (and the top-1 next-token agreement for a
    /// Llama), or "-" when not measured.
    static func function(_ p: SweepPoint) -> String {
        guard let lo = p.functionMinCosine, let mean = p.functionMeanCosine else { return "-" }
        return String(format: "%.4f / %.4f", lo, mean) + (p.functionTop1Agreement.map { String(format: ", top-1 %.1f%%", 100 * $0) } ?? "")
    }

    public static let header = ["family", "attack", "damage ‖ΔW‖/‖W‖", "function kept (min / mean cos; top-1)", "blind Z", "blind detected",
                                "informed Z (aligned)", "informed detected"]

    public static func markdown(_ points: [SweepPoint], title: String, notes: [String]) -> String {
        var s = "# \(title)\n\n"
        for n in notes { s += "- \(n)\n" }
        s += "\n| " + header.joined(separator: " | ") + " |\n|" + header.map { _ in "---" }.joined(separator: "|") + "|\n"
        for r in rows(points) { s += "| " + r.joined(separator: " | ") + " |\n" }
        s += "\n## Where the mark breaks\n\n" + breakingPoints(points).map { "- \($0)" }.joined(separator: "\n") + "\n"
        return s
    }

    /// Per family: the strongest attack still detected, and the first that is not (blind and informed).
    public static func breakingPoints(_ points: [SweepPoint]) -> [String] {
        var families: [String] = []
        for p in points where !families.contains(p.family) { families.append(p.family) }
        return families.map { fam in
            let pts = points.filter { $0.family == fam }
            func describe(_ detected: (SweepPoint) -> Bool) -> String {
                let failing = pts.filter { !detected($0) }
                if failing.isEmpty { return "survives all (\(pts.map(\.label).joined(separator: ", ")))" }
                let passing = pts.filter(detected)
                return "fails at \(failing.map(\.label).joined(separator: ", "))" + (passing.isEmpty ? "" : "; survives \(passing.map(\.label).joined(separator: ", "))")
            }
            return "**\(fam)** — blind: \(describe { $0.detectedBlind }); informed: \(describe { $0.detectedInformed })"
        }
    }

    public static func csv(_ points: [SweepPoint]) -> String {
        var s = "family,attack,spec,x,damage,function_min_cos,function_mean_cos,function_top1,blind_z,blind_log10_p_bound,blind_detected,informed_z,informed_log10_p_bound,informed_detected,informed_unaligned_z,seconds\n"
        func q(_ t: String) -> String { "\"" + t.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
        for p in points {
            s += [q(p.family), q(p.label), q(p.spec), "\(p.x)", "\(p.damage)", p.functionMinCosine.map { "\($0)" } ?? "",
                  p.functionMeanCosine.map { "\($0)" } ?? "", p.functionTop1Agreement.map { "\($0)" } ?? "", "\(p.blindZ)", "\(p.log10PBoundBlind)",
                  "\(p.detectedBlind)", "\(p.informedZ)", "\(p.log10PBoundInformed)", "\(p.detectedInformed)",
                  p.informedUnalignedZ.map { "\($0)" } ?? "", String(format: "%.3f", p.seconds)].joined(separator: ",") + "\n"
        }
        return s
    }

    static func esc(_ t: String) -> String {
        t.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// Small multiples, one panel per family with more than one point: Z (log scale, 1…1000) against the
    /// family's strength, blind and informed, and the detection threshold z* where exp(−z*²/2) = α.
    public static func svg(_ points: [SweepPoint], families: [SweepFamily], alpha: Double, title: String) -> String {
        let panels = families.filter { fam in points.filter { $0.family == fam.name }.count > 1 }
        let cols = 3, pw = 300.0, ph = 210.0, ml = 48.0, mr = 14.0, mt = 34.0, mb = 40.0
        let rows = (panels.count + cols - 1) / cols
        let width = Double(cols) * pw, height = Double(rows) * ph + 70
        let threshold = (2 * log(1 / alpha)).squareRoot()
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(width / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">\(esc(title))</text>\n"
        // Legend.
        s += "<g transform=\"translate(\(width / 2 - 230), 40)\">"
        s += "<line x1=\"0\" y1=\"0\" x2=\"24\" y2=\"0\" stroke=\"#1f77b4\" stroke-width=\"2\"/><circle cx=\"12\" cy=\"0\" r=\"3\" fill=\"#1f77b4\"/><text x=\"30\" y=\"4\">blind Z</text>"
        s += "<line x1=\"100\" y1=\"0\" x2=\"124\" y2=\"0\" stroke=\"#d62728\" stroke-width=\"2\"/><circle cx=\"112\" cy=\"0\" r=\"3\" fill=\"#d62728\"/><text x=\"130\" y=\"4\">informed Z</text>"
        s += "<line x1=\"220\" y1=\"0\" x2=\"244\" y2=\"0\" stroke=\"#555\" stroke-dasharray=\"5,3\"/><text x=\"250\" y=\"4\">threshold Z = \(f(threshold, 2)) (p ≤ \(String(format: "%.0e", alpha)))</text></g>\n"
        let yMin = 0.0, yMax = 3.0 // log10 Z from 1 to 1000
        for (k, fam) in panels.enumerated() {
            let ox = Double(k % cols) * pw, oy = 60 + Double(k / cols) * ph
            let pts = points.filter { $0.family == fam.name }
            let xs = pts.map(\.x)
            var x0 = xs.min()!, x1 = xs.max()!
            if x0 == x1 { x0 -= 1; x1 += 1 }
            let iw = pw - ml - mr, ih = ph - mt - mb
            func px(_ x: Double) -> Double { ox + ml + (x - x0) / (x1 - x0) * iw }
            func py(_ z: Double) -> Double {
                let l = max(yMin, min(yMax, log10(max(z, 1))))
                return oy + mt + ih - (l - yMin) / (yMax - yMin) * ih
            }
            s += "<g>\n<text x=\"\(ox + ml + iw / 2)\" y=\"\(oy + 18)\" text-anchor=\"middle\" font-weight=\"bold\">\(esc(fam.name))</text>\n"
            s += "<rect x=\"\(ox + ml)\" y=\"\(oy + mt)\" width=\"\(iw)\" height=\"\(ih)\" fill=\"none\" stroke=\"#999\"/>\n"
            for z in [1.0, 10, 100, 1000] {
                s += "<line x1=\"\(ox + ml)\" y1=\"\(py(z))\" x2=\"\(ox + ml + iw)\" y2=\"\(py(z))\" stroke=\"#eee\"/>"
                s += "<text x=\"\(ox + ml - 4)\" y=\"\(py(z) + 4)\" text-anchor=\"end\">\(Int(z))</text>\n"
            }
            s += "<line x1=\"\(ox + ml)\" y1=\"\(py(threshold))\" x2=\"\(ox + ml + iw)\" y2=\"\(py(threshold))\" stroke=\"#555\" stroke-dasharray=\"5,3\"/>\n"
            for x in Array(Set(xs)).sorted() {
                s += "<text x=\"\(px(x))\" y=\"\(oy + mt + ih + 14)\" text-anchor=\"middle\">\(esc(compactNumber(x)))</text>"
            }
            s += "<text x=\"\(ox + ml + iw / 2)\" y=\"\(oy + mt + ih + 30)\" text-anchor=\"middle\" fill=\"#444\">\(esc(fam.axis))</text>\n"
            s += "<text transform=\"translate(\(ox + 12), \(oy + mt + ih / 2)) rotate(-90)\" text-anchor=\"middle\" fill=\"#444\">Z (log)</text>\n"
            let sorted = pts.sorted { $0.x < $1.x }
            for (color, value) in [("#1f77b4", { (p: SweepPoint) in p.blindZ }), ("#d62728", { (p: SweepPoint) in p.informedZ })] {
                let path = sorted.map { "\(px($0.x)),\(py(value($0)))" }.joined(separator: " ")
                s += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"/>"
                for p in sorted { s += "<circle cx=\"\(px(p.x))\" cy=\"\(py(value(p)))\" r=\"3\" fill=\"\(color)\"><title>\(esc(p.label)): Z = \(f(value(p)))</title></circle>" }
                s += "\n"
            }
            s += "</g>\n"
        }
        s += "</svg>\n"
        return s
    }

    /// Function kept against Z: one point per attack, x = 1 − min cosine of the probe outputs (log scale,
    /// 1e-6…1: left is harmless, right destroys the model), y = Z (log), blind and informed, with the threshold.
    /// Points without a function measurement are left out.
    /// - Parameter measure: what the cosine compares (`FunctionProbe.measure`), for the x axis.
    public static func functionSVG(_ points: [SweepPoint], alpha: Double, title: String,
                                   measure: String = "sentence embeddings") -> String {
        let measured = points.filter { $0.functionMinCosine != nil }
        let width = 900.0, height = 560.0, ml = 70.0, mr = 200.0, mt = 60.0, mb = 60.0
        let iw = width - ml - mr, ih = height - mt - mb
        let threshold = (2 * log(1 / alpha)).squareRoot()
        func px(_ cos: Double) -> Double {
            let l = max(-6, min(0, log10(max(1e-6, 1 - cos))))
            return ml + (l + 6) / 6 * iw
        }
        func py(_ z: Double) -> Double { mt + ih - max(0, min(3, log10(max(z, 1)))) / 3 * ih }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(width / 2)\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">\(esc(title))</text>\n"
        s += "<rect x=\"\(ml)\" y=\"\(mt)\" width=\"\(iw)\" height=\"\(ih)\" fill=\"none\" stroke=\"#999\"/>\n"
        for z in [1.0, 10, 100, 1000] {
            s += "<line x1=\"\(ml)\" y1=\"\(py(z))\" x2=\"\(ml + iw)\" y2=\"\(py(z))\" stroke=\"#eee\"/><text x=\"\(ml - 6)\" y=\"\(py(z) + 4)\" text-anchor=\"end\">\(Int(z))</text>\n"
        }
        for e in 0...6 {
            let x = ml + Double(e) / 6 * iw
            s += "<line x1=\"\(x)\" y1=\"\(mt)\" x2=\"\(x)\" y2=\"\(mt + ih)\" stroke=\"#eee\"/><text x=\"\(x)\" y=\"\(mt + ih + 16)\" text-anchor=\"middle\">1e-\(6 - e)</text>\n"
        }
        s += "<text x=\"\(ml + iw / 2)\" y=\"\(height - 14)\" text-anchor=\"middle\" fill=\"#444\">function lost: 1 − min cosine of \(esc(measure)) vs the marked model (log; ≤ 1e-6 at the left edge)</text>\n"
        s += "<text transform=\"translate(20, \(mt + ih / 2)) rotate(-90)\" text-anchor=\"middle\" fill=\"#444\">Z (log)</text>\n"
        s += "<line x1=\"\(ml)\" y1=\"\(py(threshold))\" x2=\"\(ml + iw)\" y2=\"\(py(threshold))\" stroke=\"#555\" stroke-dasharray=\"5,3\"/>\n"
        for p in measured {
            let x = px(p.functionMinCosine!)
            s += "<circle cx=\"\(x)\" cy=\"\(py(p.blindZ))\" r=\"4\" fill=\"#1f77b4\"><title>\(esc(p.label)): blind Z = \(f(p.blindZ)), min cos \(String(format: "%.5f", p.functionMinCosine!))</title></circle>"
            s += "<circle cx=\"\(x)\" cy=\"\(py(p.informedZ))\" r=\"4\" fill=\"#d62728\"><title>\(esc(p.label)): informed Z = \(f(p.informedZ)), min cos \(String(format: "%.5f", p.functionMinCosine!))</title></circle>\n"
        }
        let lx = ml + iw + 16
        s += "<circle cx=\"\(lx)\" cy=\"\(mt + 10)\" r=\"4\" fill=\"#1f77b4\"/><text x=\"\(lx + 10)\" y=\"\(mt + 14)\">blind Z</text>\n"
        s += "<circle cx=\"\(lx)\" cy=\"\(mt + 30)\" r=\"4\" fill=\"#d62728\"/><text x=\"\(lx + 10)\" y=\"\(mt + 34)\">informed Z (aligned)</text>\n"
        s += "<line x1=\"\(lx - 6)\" y1=\"\(mt + 50)\" x2=\"\(lx + 6)\" y2=\"\(mt + 50)\" stroke=\"#555\" stroke-dasharray=\"5,3\"/><text x=\"\(lx + 10)\" y=\"\(mt + 54)\">threshold Z = \(f(threshold, 2))</text>\n"
        s += "</svg>\n"
        return s
    }

    static func compactNumber(_ v: Double) -> String {
        if v == v.rounded() { return String(Int(v)) }
        return String(format: "%g", v)
    }
}

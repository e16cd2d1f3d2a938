import Foundation
import Robustness
import Testing
import TensorIO
import Watermarking
import WeightMarkTestSupport

/// Traitor tracing on the real MiniLM at the default strength, 1,000 registered recipients: personal copies made
/// as `embed --recipients` makes them (same owner mark and fingerprint code, in memory), combined by colluders,
/// traced by `Tracer`, the code `weightmark trace` runs (reference paired by name or content, soft values,
/// Chernoff bound × 1,000).
///
/// What must hold in every case: at least one colluder accused; no innocent accused, neither among the registered
/// nor among 10,000 extra ids; the empirical tail of the 10,999 (or so) innocents' scores within the bound:
/// the number of innocents whose single bound is ≤ q stays below the (1 − 1e-7) quantile of Binomial(N, q)
/// (a false failure has probability < 1e-7 per check, as the bound makes each innocent's event at most q and the
/// innocents' bits are independent given the copy).
@Suite("Traitor tracing against collusions on MiniLM", .enabled(if: Fixtures.miniLMAvailable, "MiniLM not fetched (make model)"))
struct CollusionTraceTests {
    static let key = WatermarkKey(secret: (0..<32).map { UInt8(($0 * 89 + 5) & 0xFF) })

    static let bench: Result<CollusionBench, any Error> = Result {
        let path = try #require(Fixtures.miniLM)
        return try CollusionBench(original: try SafetensorsModel(path: path), key: key)
    }

    /// Colluders per group, and the combinations tried on that group's copies (made once per group).
    static let groups: [Int] = [2, 4, 8]
    static func variants(_ c: Int) -> [(strategy: CollusionStrategy, int4: Bool)] {
        c == 8 ? [(.average, false)] : CollusionStrategy.allCases.map { ($0, false) } + [(.average, true)]
    }

    /// Smallest L with P(Binomial(n, q) ≥ L) ≤ exp(−n·KL(L/n ‖ q)) ≤ 1e-7 (Chernoff).
    static func binomialLimit(n: Int, q: Double) -> Int {
        var l = Int(ceil(Double(n) * q))
        while true {
            let x = Double(l) / Double(n)
            if x >= 1 { return n }
            let kl = x * log(x / q) + (1 - x) * log((1 - x) / (1 - q))
            if exp(-Double(n) * kl) <= 1e-7 { return l }
            l += 1
        }
    }

    @Test("a colluder is accused, no innocent is, and the innocents' tail is within the bound", arguments: groups)
    func traces(_ c: Int) throws {
        let bench = try Self.bench.get()
        let points = try bench.run(colluders: c, variants: Self.variants(c), group: Self.groups.firstIndex(of: c)!)
        for p in points {
            print(String(format: "[collusion] %@: owner Z %.1f, caught %d of %d, best colluder 10^%.1f, best innocent 10^%.2f, tail %@, %.1f s",
                         p.label, p.ownerZ, p.caught, p.colluders, p.bestColluderLog10FamilyBound, p.bestInnocentLog10FamilyBound,
                         p.tail.map { "\($0.count)@\($0.q)" }.joined(separator: " "), p.seconds))
            #expect(p.caught >= 1, "\(p.label): no colluder accused: best colluder family bound 10^\(p.bestColluderLog10FamilyBound)")
            #expect(p.innocentsAccused == 0, "\(p.label)")
            #expect(p.extraInnocentsOverThreshold == 0, "\(p.label)")
            #expect(p.bestInnocentLog10FamilyBound > log10(bench.alpha), "\(p.label)")
            for t in p.tail {
                #expect(t.count <= Self.binomialLimit(n: p.innocentsScored, q: t.q), "\(p.label): \(t.count) innocents with bound ≤ \(t.q) of \(p.innocentsScored)")
            }
            // The owner mark is identical in every copy: collusion cannot wash it out (target: blind Z ≥ 10).
            #expect(p.ownerZ >= 10, "\(p.label): owner blind Z \(p.ownerZ)")
        }
    }
}

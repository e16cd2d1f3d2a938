/// Summary statistics of one float tensor.
public struct TensorStatistics: Sendable, Codable, Equatable {
    public var mean: Double
    public var rms: Double
    public var maxAbs: Double
    /// Mean of |w|.
    public var meanAbs: Double
    /// Share of elements that are exactly zero (either sign).
    public var zeroFraction: Double
    public var nonFiniteCount: Int

    /// Statistics accumulated in double precision over `values`.
    public init(_ values: UnsafeBufferPointer<Float>) {
        var sum = 0.0, sumSq = 0.0, sumAbs = 0.0, maxAbs: Float = 0
        var zeros = 0, nonFinite = 0
        // Blocks of 4096 keep float partial sums short (accurate) while the inner loop vectorizes.
        var start = 0
        while start < values.count {
            let end = min(values.count, start + 4096)
            var s: Float = 0, q: Float = 0, a: Float = 0, z = 0
            for i in start..<end {
                let v = values[i]
                if !v.isFinite { nonFinite += 1; continue }
                s += v; q += v * v; a += abs(v)
                maxAbs = max(maxAbs, abs(v))
                z += v == 0 ? 1 : 0
            }
            sum += Double(s); sumSq += Double(q); sumAbs += Double(a); zeros += z
            start = end
        }
        let n = Double(max(1, values.count - nonFinite))
        mean = sum / n
        rms = (sumSq / n).squareRoot()
        meanAbs = sumAbs / n
        self.maxAbs = Double(maxAbs)
        zeroFraction = values.isEmpty ? 0 : Double(zeros) / Double(values.count)
        nonFiniteCount = nonFinite
    }

    public init(_ values: [Float]) {
        self = values.withUnsafeBufferPointer { TensorStatistics($0) }
    }
}

import LinearAlgebra
import TensorIO

/// Additive Gaussian noise with standard deviation `sigma` × rms(W) per tensor.
public struct GaussianNoise: WeightAttack {
    public let sigma: Double
    public let seed: UInt64
    public init(sigma: Double, seed: UInt64 = 1) { self.sigma = sigma; self.seed = seed }
    public var spec: String { "noise:sigma=\(compact(sigma)),seed=\(seed)" }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        let rms = (values.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(max(1, values.count))).squareRoot()
        let s = Float(sigma * rms)
        var rng = SplitMix64(seed: tensorSeed(seed, name))
        for i in values.indices { values[i] += s * rng.nextGaussian() }
    }
}

/// Fine-tuning simulation: a merged LoRA update `ΔW = ε‖W‖ · U Vᵀ/‖U Vᵀ‖` (U: m×r, V: n×r Gaussian), or a
/// dense drift of the same relative norm ε.
public struct FineTuneSimulation: WeightAttack {
    public enum Mode: String, Sendable { case lora, dense }
    public let mode: Mode
    public let rank: Int
    public let epsilon: Double
    public let seed: UInt64
    public init(mode: Mode, rank: Int = 16, epsilon: Double, seed: UInt64 = 1) {
        self.mode = mode; self.rank = rank; self.epsilon = epsilon; self.seed = seed
    }
    public var spec: String {
        mode == .lora ? "lora:rank=\(rank),eps=\(compact(epsilon)),seed=\(seed)" : "drift:eps=\(compact(epsilon)),seed=\(seed)"
    }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        let (m, n) = (shape[0], shape[1])
        var rng = SplitMix64(seed: tensorSeed(seed, name))
        let update: [Float]
        switch mode {
        case .lora:
            let r = min(rank, m, n)
            let u = Matrix(rows: m, cols: r, storage: (0..<(m * r)).map { _ in rng.nextGaussian() })
            let v = Matrix(rows: n, cols: r, storage: (0..<(n * r)).map { _ in rng.nextGaussian() })
            update = BLAS.matmul(u, v, transB: .transposed).storage
        case .dense:
            update = (0..<(m * n)).map { _ in rng.nextGaussian() }
        }
        let wNorm = BLAS.nrm2(values), uNorm = BLAS.nrm2(update)
        guard uNorm > 0 else { return }
        BLAS.axpy(Float(epsilon) * wNorm / uNorm, update, &values)
    }
}

/// Low-rank compression: keep the top singular triplets, by rank fraction or by kept energy Σσ²
/// (randomized SVD from LinearAlgebra for the reconstruction).
public struct LowRankTruncation: WeightAttack {
    public enum Budget: Sendable, Equatable { case rankFraction(Double), energy(Double) }
    public let budget: Budget
    public init(budget: Budget) { self.budget = budget }
    public var spec: String {
        switch budget {
        case let .rankFraction(f): "lowrank:rank=\(compact(f))"
        case let .energy(e): "lowrank:energy=\(compact(e))"
        }
    }

    public func apply(name: String, shape: [Int], values: inout [Float], context: AttackContext) throws {
        let w = Matrix(rows: shape[0], cols: shape[1], storage: values)
        let full = min(shape[0], shape[1])
        let k: Int
        switch budget {
        case let .rankFraction(f):
            k = max(1, min(full, Int((f * Double(full)).rounded())))
        case let .energy(e):
            let s = try LAPACK.singularValues(w)
            let total = s.reduce(0.0) { $0 + Double($1) * Double($1) }
            var acc = 0.0, r = 0
            while r < s.count && acc < e * total { acc += Double(s[r]) * Double(s[r]); r += 1 }
            k = max(1, r)
        }
        if k >= full { return }
        let (u, s, vt) = try LAPACK.randomizedSVD(w, rank: k, oversampling: 10, powerIterations: 2, seed: tensorSeed(7, name))
        var us = u
        for i in 0..<us.rows { for j in 0..<k { us[i, j] *= s[j] } }
        values = BLAS.matmul(us, vt).storage
    }
}

import TensorIO

/// Applies a chain of attacks to a whole model.
public enum AttackRunner {
    /// Attacked values of every tensor some attack in the chain touches (in memory; others unchanged),
    /// with the dtype each should be stored as. Each attack transforms the output of the previous one;
    /// `prepare` (e.g. the global pruning threshold) sees the input model.
    /// - Parameter progress: called after each (attack, tensor) step with the steps done, their total and the tensor.
    public static func apply(_ chain: [any WeightAttack], to model: SafetensorsModel, context: AttackContext,
                             progress: (Int, Int, String) -> Void = { _, _, _ in })
        throws -> [String: (values: [Float], dtype: DType)] {
        var prepared = chain
        var out: [String: (values: [Float], dtype: DType)] = [:]
        let total = chain.reduce(0) { n, a in n + model.tensors.filter { a.applies(to: $0.name, shape: $0.shape, dtype: $0.dtype) }.count }
        var done = 0
        for k in prepared.indices {
            try prepared[k].prepare(model: model, context: context)
            let attack = prepared[k]
            for t in model.tensors where attack.applies(to: t.name, shape: t.shape, dtype: t.dtype) {
                var entry = try out[t.name] ?? (try model.floats(of: t), t.dtype)
                try attack.apply(name: t.name, shape: t.shape, values: &entry.values, context: context)
                entry.dtype = attack.outputDType(for: entry.dtype)
                out[t.name] = entry
                done += 1
                progress(done, total, t.name)
            }
        }
        return out
    }

    /// Applies the chain and writes the result in the source's layout.
    public static func write(_ chain: [any WeightAttack], to model: SafetensorsModel, context: AttackContext,
                             destination: String, overwrite: Bool,
                             progress: (Int, Int, String) -> Void = { _, _, _ in }) throws -> [String: (values: [Float], dtype: DType)] {
        let attacked = try apply(chain, to: model, context: context, progress: progress)
        try ModelWriter.write(like: model, to: destination, overwrite: overwrite) { t in
            guard let a = attacked[t.name] else { return nil }
            return OutputTensor(name: t.name, dtype: a.dtype, shape: t.shape, bytes: FloatConversion.encode(a.values, as: a.dtype))
        }
        return attacked
    }

    /// Relative Frobenius error of the attacked tensors against the model's own: sqrt(Σ‖W'−W‖² / Σ‖W‖²)
    /// over the tensors selected by `include`.
    public static func damage(_ attacked: [String: (values: [Float], dtype: DType)], against model: SafetensorsModel,
                              include: (ModelTensor) -> Bool) throws -> Double {
        var num = 0.0, den = 0.0
        for t in model.tensors where include(t) && t.dtype.isSupportedFloat {
            let w = try model.floats(of: t)
            for v in w { den += Double(v) * Double(v) }
            if let a = attacked[t.name] {
                for i in w.indices { let d = Double(a.values[i]) - Double(w[i]); num += d * d }
            }
        }
        return den > 0 ? (num / den).squareRoot() : 0
    }
}

import TensorIO

/// Every attack by name, with its parameters documented: the source of `weightmark attack --list`.
public enum AttackCatalog {
    public struct Entry: Sendable {
        public var name: String
        public var parameters: String
        public var summary: String
    }

    public static let entries: [Entry] = [
        Entry(name: "fp16", parameters: "", summary: "cast to float16 (stored as F16, round to nearest even)"),
        Entry(name: "bf16", parameters: "", summary: "cast to bfloat16 (stored as BF16, round to nearest even)"),
        Entry(name: "fp8", parameters: "", summary: "float8 E4M3 with a per-tensor scale (max |w| ↦ 448), simulated"),
        Entry(name: "int8", parameters: "", summary: "symmetric round-to-nearest int8, one scale per output channel"),
        Entry(name: "int<k>", parameters: "group=128 (32, 64, 128), k = 2…8", summary: "asymmetric k-bit, groups of consecutive weights along rows (int4:group=128)"),
        Entry(name: "nf4", parameters: "block=64", summary: "bitsandbytes 4-bit NormalFloat, absmax blocks"),
        Entry(name: "gguf", parameters: "type=Q8_0 (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K)", summary: "llama.cpp block quantization round trip (bytes identical with the gguf package for the 32-blocks)"),
        Entry(name: "prune", parameters: "fraction=0.5, mode=magnitude (magnitude, global, random, rows, columns), seed=1", summary: "set the smallest (or random) weights, rows or columns to zero"),
        Entry(name: "nm", parameters: "n=2, m=4", summary: "N:M structured sparsity (2:4 keeps the 2 largest of every 4)"),
        Entry(name: "noise", parameters: "sigma=0.1 (× rms of each tensor), seed=1", summary: "additive Gaussian noise"),
        Entry(name: "lowrank", parameters: "energy=0.9 | rank=0.5 (fraction of full rank)", summary: "truncated SVD (randomized) keeping that energy or rank"),
        Entry(name: "lora", parameters: "rank=16, eps=0.05 (‖ΔW‖/‖W‖), seed=1", summary: "merged LoRA fine-tune simulation"),
        Entry(name: "drift", parameters: "eps=0.05, seed=1", summary: "dense fine-tune drift of relative norm eps"),
        Entry(name: "overwrite", parameters: "strength=1 (× default δ)", summary: "embed another owner's mark on top"),
        Entry(name: "merge", parameters: "alpha=0.5, seed=1", summary: "interpolate with an independent model (synthetic with matched per-row statistics unless a partner is given)"),
        Entry(name: "collusion", parameters: "copies=4", summary: "average of K copies marked with different keys (needs the original)"),
        Entry(name: "permute", parameters: "seed=1", summary: "function-preserving permutation of FFN hidden units (BERT and Llama layouts)"),
        Entry(name: "permute-heads", parameters: "heads=12, kv=heads, seed=1", summary: "function-preserving permutation of attention heads (within key/value groups when kv < heads; BERT and Llama layouts)"),
        Entry(name: "scale-ffn", parameters: "spread=4, seed=1", summary: "function-preserving SwiGLU unit rescaling: up row × c, down column ÷ c, |c| log-uniform in [1/spread, spread], random sign (Llama layout)"),
        Entry(name: "rotate", parameters: "seed=1", summary: "function-preserving residual-stream rotation by a random orthogonal matrix, norm weights fused first (Llama layout, RMSNorm)"),
    ]

    /// Builds one attack from its name and parameters.
    public static func make(name: String, parameters raw: [String: String]) throws -> any WeightAttack {
        var p = AttackParameters(attack: name, values: raw)
        let attack: any WeightAttack
        switch name {
        case "fp16": attack = CastAttack(target: .fp16)
        case "bf16": attack = CastAttack(target: .bf16)
        case "fp8": attack = CastAttack(target: .fp8)
        case "int8" where raw["group"] == nil:
            attack = IntegerQuantization(bits: 8, scheme: .perChannelSymmetric)
        case let n where n.hasPrefix("int") && Int(n.dropFirst(3)) != nil:
            let bits = Int(n.dropFirst(3))!
            guard (2...8).contains(bits) else {
                throw AttackError.invalidParameter(attack: name, parameter: "bits", reason: "must be 2…8")
            }
            let group = try p.int("group", default: 128, in: 1...1_048_576)
            attack = IntegerQuantization(bits: bits, scheme: .groupAsymmetric(size: group))
        case "nf4": attack = NF4Quantization(blockSize: try p.int("block", default: 64, in: 2...65_536))
        case "gguf":
            let typeName = try p.choice("type", default: "Q8_0", among: ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q6_K"])
            let type = GGMLType.allCases.first { $0.name == typeName }!
            attack = GGUFQuantization(type: type)
        case "prune":
            let mode = try p.choice("mode", default: "magnitude", among: Pruning.Mode.allCases.map(\.rawValue))
            attack = Pruning(fraction: try p.double("fraction", default: 0.5, in: 0...1), mode: Pruning.Mode(rawValue: mode)!,
                             seed: UInt64(try p.int("seed", default: 1, in: 0...Int.max)))
        case "nm":
            let m = try p.int("m", default: 4, in: 1...1024)
            attack = NMSparsity(keep: try p.int("n", default: 2, in: 0...m), group: m)
        case "noise":
            attack = GaussianNoise(sigma: try p.double("sigma", default: 0.1, in: 0...100), seed: UInt64(try p.int("seed", default: 1, in: 0...Int.max)))
        case "lowrank":
            if raw["rank"] != nil {
                attack = LowRankTruncation(budget: .rankFraction(try p.double("rank", default: 0.5, in: 0...1)))
            } else {
                attack = LowRankTruncation(budget: .energy(try p.double("energy", default: 0.9, in: 0...1)))
            }
            _ = p.string("rank"); _ = p.string("energy")
        case "lora":
            attack = FineTuneSimulation(mode: .lora, rank: try p.int("rank", default: 16, in: 1...65_536),
                                        epsilon: try p.double("eps", default: 0.05, in: 0...10), seed: UInt64(try p.int("seed", default: 1, in: 0...Int.max)))
        case "drift":
            attack = FineTuneSimulation(mode: .dense, epsilon: try p.double("eps", default: 0.05, in: 0...10),
                                        seed: UInt64(try p.int("seed", default: 1, in: 0...Int.max)))
        case "overwrite": attack = OverwriteAttack(scale: try p.double("strength", default: 1, in: 0...100))
        case "merge":
            attack = MergeAttack(alpha: try p.double("alpha", default: 0.5, in: 0...1), seed: UInt64(try p.int("seed", default: 1, in: 0...Int.max)))
        case "collusion": attack = CollusionAttack(copies: try p.int("copies", default: 4, in: 2...64))
        case "permute": attack = FFNPermutation(seed: UInt64(try p.int("seed", default: 1, in: 0...Int.max)))
        case "permute-heads":
            let heads = try p.int("heads", default: 12, in: 1...65_536)
            let kv = try p.int("kv", default: heads, in: 1...heads)
            guard heads % kv == 0 else { throw AttackError.invalidParameter(attack: name, parameter: "kv", reason: "must divide heads (\(heads))") }
            attack = HeadPermutation(heads: heads, kvHeads: kv, seed: UInt64(try p.int("seed", default: 1, in: 0...Int.max)))
        case "scale-ffn":
            attack = FFNScaling(spread: try p.double("spread", default: 4, in: 1...1_000), seed: UInt64(try p.int("seed", default: 1, in: 0...Int.max)))
        case "rotate": attack = ResidualRotation(seed: UInt64(try p.int("seed", default: 1, in: 0...Int.max)))
        default: throw AttackError.unknownAttack(name)
        }
        try p.checkAllUsed()
        return attack
    }

    /// Parses a spec (one attack or a chain) into attacks, in order.
    public static func chain(_ spec: String) throws -> [any WeightAttack] {
        try AttackSpecParser.parse(spec).map { try make(name: $0.name, parameters: $0.parameters) }
    }
}

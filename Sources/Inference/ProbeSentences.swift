/// A fixed set of tokenized sentences for measuring function kept: the twelve sentences of `Benchmarks/fidelity.py`,
/// tokenized once by that script's WordPiece tokenizer with all-MiniLM-L6-v2's vocab.txt (uncased BERT vocabulary;
/// [CLS] = 101, [SEP] = 102). Committed as ids so no tokenizer runs inside WeightMark.
public enum ProbeSentences {
    public static let text: [String] = [
        "The quick brown fox jumps over the lazy dog.",
        "A man is eating food.",
        "A man is playing a violin.",
        "The new movie is awesome and everyone loved it!",
        "Watermarks help prove where leaked model weights came from.",
        "Stock markets fell sharply on Tuesday after the announcement.",
        "How do I reset my password?",
        "Photosynthesis converts light energy into chemical energy.",
        "She sells seashells by the seashore, 3 times a day.",
        "Neural networks approximate functions with layers of weights.",
        "It rained all night, so the football match was cancelled.",
        "Can you recommend a good Italian restaurant nearby?",
    ]

    public static let uncasedBERT: [[Int]] = [
        [101, 1996, 4248, 2829, 4419, 14523, 2058, 1996, 13971, 3899, 1012, 102],
        [101, 1037, 2158, 2003, 5983, 2833, 1012, 102],
        [101, 1037, 2158, 2003, 2652, 1037, 6710, 1012, 102],
        [101, 1996, 2047, 3185, 2003, 12476, 1998, 3071, 3866, 2009, 999, 102],
        [101, 2300, 27373, 2393, 6011, 2073, 15748, 2944, 15871, 2234, 2013, 1012, 102],
        [101, 4518, 6089, 3062, 9249, 2006, 9857, 2044, 1996, 8874, 1012, 102],
        [101, 2129, 2079, 1045, 25141, 2026, 20786, 1029, 102],
        [101, 7760, 6038, 25078, 19884, 2422, 2943, 2046, 5072, 2943, 1012, 102],
        [101, 2016, 15187, 11915, 18223, 2015, 2011, 1996, 11915, 16892, 1010, 1017, 2335, 1037, 2154, 1012, 102],
        [101, 15756, 6125, 15796, 4972, 2007, 9014, 1997, 15871, 1012, 102],
        [101, 2009, 28270, 2035, 2305, 1010, 2061, 1996, 2374, 2674, 2001, 8014, 1012, 102],
        [101, 2064, 2017, 16755, 1037, 2204, 3059, 4825, 3518, 1029, 102],
    ]
}

/// How much of a model's function an attack kept: cosine similarity of each probe input's output vector with the
/// unattacked model's (a BERT model's sentence embedding; a Llama's logits at the last position), and for causal
/// language models the share of positions whose most likely next token is unchanged.
public struct FunctionKept: Sendable, Codable, Equatable {
    public var minCosine: Double
    public var meanCosine: Double
    /// Probe inputs compared: sentences (BERT) or token sequences (Llama).
    public var sentences: Int
    /// Share of (sequence, position) pairs whose argmax token is the unattacked model's; nil for encoders.
    public var top1Agreement: Double?

    public init(reference: [[Float]], attacked: [[Float]]) {
        precondition(reference.count == attacked.count && !reference.isEmpty)
        let cos = zip(reference, attacked).map { a, b -> Double in
            var dot = 0.0, na = 0.0, nb = 0.0
            for k in a.indices { dot += Double(a[k]) * Double(b[k]); na += Double(a[k]) * Double(a[k]); nb += Double(b[k]) * Double(b[k]) }
            return na > 0 && nb > 0 ? dot / (na * nb).squareRoot() : 0
        }
        minCosine = cos.min()!
        meanCosine = cos.reduce(0, +) / Double(cos.count)
        sentences = cos.count
    }
}

import CKernels
import Crypto
import Foundation

/// The keyed Tardos code behind per-recipient fingerprints (docs/FORMAT.md, "Fingerprints (trace)").
///
/// Every code position i < `positions` has a secret bias p_i = k_i/256 drawn from the arcsine density on
/// [2/256, 254/256]. Recipient j's bit at position i is `X_ji = [u_ji < k_i]`, u_ji being keystream byte i of
/// ChaCha20 keyed by HMAC-SHA256(recipient subkey, UTF-8 id): derived from (key, id) alone, no database, and
/// P(X_ji = 1) = p_i exactly.
///
/// In a weight matrix (read in the marked matrix's coordinates), weight (r, c) belongs to position
/// `pos(r, c/64)` — a keyed function of the row and the 64-column segment — and carries the keyed chip
/// `chip(r, c)` = ±1. A recipient's fingerprint is `β_f · chip(r, c) · (2 X_{j,pos(r,c)} − 1)`: each position
/// is carried by its own disjoint, full-rank set of weights, so the difference of two copies shows only the
/// positions where their bits differ (Tardos' marking assumption) and never a shared low-rank subspace.
public struct FingerprintCode: Sendable {
    /// Code length m (a power of two: positions are the low bits of a keystream word).
    public static let positions = 8192
    /// Consecutive weights of a row that share a position.
    public static let segment = 64
    /// Smallest threshold k (p ≥ 2/256 and ≤ 254/256): Tardos' cutoff t.
    public static let minimumThreshold = 2

    /// HKDF `info` strings (part of the format).
    static let biasInfo = Array("weightmark/v2|trace-bias".utf8)
    static let positionInfo = Array("weightmark/v2|trace-position".utf8)
    static let chipInfo = Array("weightmark/v2|trace-chip".utf8)
    static let recipientInfo = Array("weightmark/v2|trace-recipient".utf8)

    /// k_i: recipient bit i is 1 when its keystream byte is below k_i (p_i = k_i/256).
    public let thresholds: [UInt8]
    private let positionKey: [UInt8]
    private let chipKey: [UInt8]
    private let recipientKey: [UInt8]

    /// Derives the code of `secret`.
    ///
    /// Bias i: u = (keystream word i of ChaCha20(bias subkey) + 0.5)·2⁻³², θ = θ_t + u(π/2 − 2θ_t) with
    /// θ_t = asin(sqrt(t)), t = 2/256; p = sin²θ (arcsine density on [t, 1 − t]); k_i = round(256 p) clamped to
    /// [2, 254].
    public init(secret: [UInt8]) {
        var stream = ChaCha20(key: KeyedGenerator.subkey(secret: secret, info: Self.biasInfo))
        let t = Double(Self.minimumThreshold) / 256
        let thetaT = asin(t.squareRoot())
        thresholds = (0..<Self.positions).map { _ in
            let u = (Double(stream.nextWord()) + 0.5) * 0x1p-32
            let theta = thetaT + u * (Double.pi / 2 - 2 * thetaT)
            let p = sin(theta) * sin(theta)
            let k = min(256 - Self.minimumThreshold, max(Self.minimumThreshold, Int((256 * p).rounded())))
            return UInt8(k)
        }
        positionKey = KeyedGenerator.subkey(secret: secret, info: Self.positionInfo)
        chipKey = KeyedGenerator.subkey(secret: secret, info: Self.chipInfo)
        recipientKey = KeyedGenerator.subkey(secret: secret, info: Self.recipientInfo)
    }

    /// p_i = k_i / 256.
    public var biases: [Double] { thresholds.map { Double($0) / 256 } }

    /// The ChaCha20 key of recipient `id`: HMAC-SHA256(recipient subkey, UTF-8 bytes of id).
    func recipientStreamKey(_ id: String) -> [UInt8] {
        let mac = HMAC<SHA256>.authenticationCode(for: Array(id.utf8), using: SymmetricKey(data: recipientKey))
        return Array(mac)
    }

    /// The same key as 8 little-endian words (for the C scoring kernel).
    func recipientKeyWords(_ id: String) -> [UInt32] {
        let k = recipientStreamKey(id)
        return (0..<8).map { i in (0..<4).reduce(UInt32(0)) { $0 | UInt32(k[4 * i + $1]) << (8 * UInt32($1)) } }
    }

    /// Recipient `id`'s code bits X_j (0 or 1), one per position.
    public func bits(recipient id: String) -> [UInt8] {
        var stream = ChaCha20(key: recipientStreamKey(id))
        let u = stream.nextBytes(Self.positions)
        return (0..<Self.positions).map { u[$0] < thresholds[$0] ? 1 : 0 }
    }

    /// The position and chip subkeys as little-endian words (for the C kernel).
    var rowKeyWords: (position: [UInt32], chip: [UInt32]) { (Self.words(positionKey), Self.words(chipKey)) }

    static func words(_ key: [UInt8]) -> [UInt32] {
        (0..<8).map { i in (0..<4).reduce(UInt32(0)) { $0 | UInt32(key[4 * i + $1]) << (8 * UInt32($1)) } }
    }

    /// Positions and chips of row `row` of a matrix `cols` wide: `positions[s]` for segment s < ceil(cols/64)
    /// (low 13 bits of keystream word s of ChaCha20(position subkey, nonce LE32(row) ‖ LE32(row >> 32) ‖ LE32(0)));
    /// chip of column c = bit (c mod 32) of word c/32 of ChaCha20(chip subkey, same nonce): 1 → +1, 0 → −1.
    func rowCodes(row: Int, cols: Int, positions: inout [UInt32], chips: inout [UInt32]) {
        let segments = (cols + Self.segment - 1) / Self.segment
        let chipWords = (cols + 31) / 32
        if positions.count < segments { positions = [UInt32](repeating: 0, count: segments) }
        if chips.count < chipWords { chips = [UInt32](repeating: 0, count: chipWords) }
        Self.keystream(positionKey, row: row, words: segments, into: &positions)
        for s in 0..<segments { positions[s] &= UInt32(Self.positions - 1) }
        Self.keystream(chipKey, row: row, words: chipWords, into: &chips)
    }

    /// The first `words` keystream words of ChaCha20(key, nonce LE32(row) ‖ LE32(row >> 32) ‖ 0), counter 0.
    private static func keystream(_ key: [UInt8], row: Int, words: Int, into out: inout [UInt32]) {
        var state = SIMD16<UInt32>()
        state[0] = 0x6170_7865; state[1] = 0x3320_646E; state[2] = 0x7962_2D32; state[3] = 0x6B20_6574
        for i in 0..<8 {
            state[4 + i] = UInt32(key[4 * i]) | UInt32(key[4 * i + 1]) << 8 | UInt32(key[4 * i + 2]) << 16 | UInt32(key[4 * i + 3]) << 24
        }
        state[12] = 0
        state[13] = UInt32(truncatingIfNeeded: UInt64(row))
        state[14] = UInt32(truncatingIfNeeded: UInt64(row) >> 32)
        state[15] = 0
        var block = [UInt32](repeating: 0, count: 64)
        var filled = 0
        while filled < words {
            block.withUnsafeMutableBufferPointer { ChaCha20.blocks4(state, into: $0.baseAddress!) }
            state[12] &+= 4
            let take = min(64, words - filled)
            for k in 0..<take { out[filled + k] = block[k] }
            filled += take
        }
    }
}

/// One recipient's fingerprint, added to the marked rows by the embedder (`EmbedOptions.copySignal`).
public struct RecipientFingerprint: CopySignal {
    public let recipient: String
    public let share: Double
    /// ±1 per position: 2X − 1.
    let signs: [Float]
    let code: FingerprintCode

    /// - Parameter share: the fingerprint's part f of the distortion budget δ: fingerprint δ_f = f·δ, owner mark
    ///   δ_o = sqrt(1 − f²)·δ, so the total ‖ΔW‖/‖W‖ stays δ.
    public init(code: FingerprintCode, recipient: String, share: Double) {
        precondition(share > 0 && share < 1, "the fingerprint's share of δ is in (0, 1)")
        self.code = code
        self.recipient = recipient
        self.share = share
        signs = code.bits(recipient: recipient).map { $0 == 1 ? 1 : -1 }
    }

    public func add(rows: Range<Int>, cols n: Int, scale: Float, into out: UnsafeMutablePointer<Float>) {
        guard !rows.isEmpty else { return }
        let keys = code.rowKeyWords
        keys.position.withUnsafeBufferPointer { pk in
            keys.chip.withUnsafeBufferPointer { ck in
                signs.withUnsafeBufferPointer { sg in
                    weightmark_fingerprint_rows(pk.baseAddress, ck.baseAddress, UInt64(rows.lowerBound), rows.count, n, sg.baseAddress,
                                                UInt32(FingerprintCode.positions - 1), scale, out)
                }
            }
        }
    }
}

/// A per-copy signal the embedder adds to each marked matrix on top of the owner mark (traitor tracing).
///
/// The signal is ±1 per weight before scaling (‖signal‖² = number of weights); the embedder scales it so that
/// its relative distortion is `share`·δ and lowers the owner mark to sqrt(1 − share²)·δ.
public protocol CopySignal: Sendable {
    /// Part f of the distortion budget δ given to the signal.
    var share: Double { get }
    /// Adds `scale` × the signal for rows `rows` of an m×n matrix (marked coordinates) to `out` (row-major,
    /// leading dimension n, first row = rows.lowerBound).
    func add(rows: Range<Int>, cols n: Int, scale: Float, into out: UnsafeMutablePointer<Float>)
}

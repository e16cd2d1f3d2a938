/// The residual of informed detection: suspect − reference, with erasures masked.
///
/// Where the suspect is exactly zero and the reference is not, the weight was erased (pruned): counting
/// `0 − reference` as residual would bring the host back as noise, so it is set to zero instead and counted.
/// Formats v1 and v2 both compute their informed residual here.
enum Residual {
    /// `block[i] = block[i] − reference(i)` for i < `count`, erasures set to zero.
    /// - Returns: the number of erased elements.
    @inline(__always)
    static func subtract(count: Int, reference: (Int) -> Float, from block: UnsafeMutableBufferPointer<Float>) -> Int {
        var erased = 0
        for i in 0..<count {
            let s = block[i], r = reference(i)
            if s == 0 && r != 0 { block[i] = 0; erased += 1 } else { block[i] = s - r }
        }
        return erased
    }

    /// Sets every NaN or ±Inf of `block` to zero: such a value carries no evidence and would make a score NaN.
    /// - Returns: how many were set.
    static func clearNonFinite(_ block: UnsafeMutableBufferPointer<Float>) -> Int {
        var cleared = 0
        for i in 0..<block.count where !block[i].isFinite { block[i] = 0; cleared += 1 }
        return cleared
    }
}

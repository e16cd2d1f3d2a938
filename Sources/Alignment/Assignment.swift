/// Linear assignment: pairs the rows of a similarity matrix with distinct columns so that the total similarity is
/// largest (rectangular: every row of the smaller side gets a partner).
///
/// The solver is the shortest-augmenting-path method of Jonker and Volgenant (1987): feasible dual prices are kept
/// for rows and columns, and each unassigned row is added by a Dijkstra search over reduced costs for the cheapest
/// path to a free column, along which the assignment is flipped. Rows whose best column is claimed by no other row
/// are assigned up front (with row-minimum prices that assignment is already optimal for them), so a suspect that
/// differs from the reference by a permutation costs one pass over the matrix plus a few augmentations; when every row's
/// best column is distinct, that pass is the whole answer and the matrix is not even copied to double precision.
///
/// - Complexity: O(r·c) for the greedy start; each augmentation O(r·c) in the worst case (r rows, c columns).
public enum LinearAssignment {
    /// The assignment of maximum total similarity.
    ///
    /// - Parameters:
    ///   - similarity: r×c row-major similarities (finite).
    ///   - rows: r.
    ///   - cols: c.
    /// - Returns: for each row, its column, or nil when r > c and the row got none (exactly r − c rows).
    public static func maximize(_ similarity: [Float], rows r: Int, cols c: Int) -> [Int?] {
        precondition(similarity.count == r * c, "similarity holds \(similarity.count) values, expected \(r)×\(c)")
        if r == 0 { return [] }
        if c == 0 { return [Int?](repeating: nil, count: r) }
        if r <= c {
            if let best = distinctRowMaxima(similarity, rows: r, cols: c) { return best.map { Optional($0) } }
            return solve(cost: similarity.map { -Double($0) }, rows: r, cols: c).map { Optional($0) }
        }
        // More rows than columns: solve the transposed problem (every column gets a row).
        var transposed = [Double](repeating: 0, count: r * c)
        for i in 0..<r { for j in 0..<c { transposed[j * r + i] = -Double(similarity[i * c + j]) } }
        let colToRow = solve(cost: transposed, rows: c, cols: r)
        var out = [Int?](repeating: nil, count: r)
        for (j, i) in colToRow.enumerated() { out[i] = j }
        return out
    }

    /// Each row's best column (the first maximum), when no two rows share one: then every row has its largest
    /// similarity, no assignment can do better, and it is exactly what `solve` returns (its greedy start assigns every
    /// row to that column and no augmentation follows). Costs one pass over the matrix and no copy.
    static func distinctRowMaxima(_ similarity: [Float], rows r: Int, cols c: Int) -> [Int]? {
        var colOf = [Int](repeating: 0, count: r)
        var taken = [Bool](repeating: false, count: c)
        return similarity.withUnsafeBufferPointer { s -> [Int]? in
            for i in 0..<r {
                var best = -Float.infinity, arg = -1
                for j in 0..<c where s[i * c + j] > best { best = s[i * c + j]; arg = j }
                guard arg >= 0, !taken[arg] else { return nil }
                taken[arg] = true
                colOf[i] = arg
            }
            return colOf
        }
    }

    /// Minimum-cost assignment of every row (r ≤ c) to a distinct column.
    static func solve(cost: [Double], rows r: Int, cols c: Int) -> [Int] {
        var u = [Double](repeating: 0, count: r)       // row prices
        var v = [Double](repeating: 0, count: c)       // column prices
        var rowOf = [Int](repeating: -1, count: c)     // column → row
        var colOf = [Int](repeating: -1, count: r)     // row → column
        // Greedy start: row prices are row minima (v = 0), so every reduced cost is ≥ 0; a row whose cheapest column
        // no earlier row took is assigned there on a tight edge, which keeps the duals valid.
        for i in 0..<r {
            var best = Double.infinity, arg = 0
            for j in 0..<c where cost[i * c + j] < best { best = cost[i * c + j]; arg = j }
            u[i] = best
            if rowOf[arg] < 0 { rowOf[arg] = i; colOf[i] = arg }
        }
        var dist = [Double](repeating: 0, count: c)
        var pred = [Int](repeating: 0, count: c)
        var done = [Bool](repeating: false, count: c)
        var scanned: [Int] = []
        for start in 0..<r where colOf[start] < 0 {
            // Dijkstra from `start` over columns, with reduced costs cost − u − v ≥ 0.
            for j in 0..<c {
                dist[j] = cost[start * c + j] - u[start] - v[j]
                pred[j] = start
                done[j] = false
            }
            scanned.removeAll(keepingCapacity: true)
            var sink = -1
            var reached = 0.0
            while sink < 0 {
                var best = Double.infinity, arg = -1
                for j in 0..<c where !done[j] && dist[j] < best { best = dist[j]; arg = j }
                precondition(arg >= 0, "assignment: no augmenting path (non-finite similarities?)")
                done[arg] = true
                scanned.append(arg)
                reached = best
                let i = rowOf[arg]
                if i < 0 { sink = arg; break }
                let base = best - (cost[i * c + arg] - u[i] - v[arg])
                for j in 0..<c where !done[j] {
                    let d = base + cost[i * c + j] - u[i] - v[j]
                    if d < dist[j] { dist[j] = d; pred[j] = i }
                }
            }
            // Price update keeps reduced costs ≥ 0 and the new path tight.
            for j in scanned where j != sink {
                let i = rowOf[j]
                v[j] -= reached - dist[j]
                u[i] += reached - dist[j]
            }
            u[start] += reached
            // Flip the path.
            var j = sink
            while true {
                let i = pred[j]
                rowOf[j] = i
                let previous = colOf[i]
                colOf[i] = j
                if i == start { break }
                j = previous
            }
        }
        return colOf
    }
}

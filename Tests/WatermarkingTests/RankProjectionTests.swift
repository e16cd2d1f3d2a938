import CKernels
import Foundation
import Testing
import LinearAlgebra
import WeightMarkTestSupport
import TensorIO
@testable import Watermarking

@Suite("Rank-32 projection kernel")
struct RankProjectionTests {
    /// Rows and columns that exercise every remainder: full 12-row blocks, 4-row and single-row tails, and
    /// column counts below, at and across the 256-column chunk.
    @Test("X·B from f32 and from stored bf16 equals BLAS on every code path", arguments: [(1, 1), (5, 37), (12, 256), (29, 300), (131, 513)])
    func matchesBLAS(_ k: Int, _ n: Int) {
        var rng = SplitMix64(seed: UInt64(k * 1000 + n))
        // bf16-representable values, so the f32 and bf16 inputs are the same numbers.
        let encoded = FloatConversion.encode((0..<(k * n)).map { _ in rng.nextGaussian() }, as: .bf16)
        let x = Matrix(rows: k, cols: n, storage: encoded.withUnsafeBytes { FloatConversion.decode($0, dtype: .bf16) })
        let b = Matrix(rows: n, cols: 32, storage: (0..<(n * 32)).map { _ in rng.nextGaussian() })
        let reference = BLAS.matmul(x, b)
        let scale = Float(n).squareRoot()
        let stored = FloatConversion.encode(x.storage, as: .bf16)
        for path in KeyedGenerator.gaussianCodePaths.map(Int32.init) {
            var z = [Float](repeating: .nan, count: k * 32)
            x.storage.withUnsafeBufferPointer { xs in
                RankProjection.project(xs, rows: k, cols: n, b: b, into: &z, codePath: path)
            }
            #expect(zip(z, reference.storage).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "f32, path \(path)")
            z = [Float](repeating: .nan, count: k * 32)
            let done = stored.withUnsafeBytes { raw in
                RankProjection.project(stored: raw, dtype: .bf16, rows: k, cols: n, b: b, into: &z, codePath: path)
            }
            #expect(done)
            #expect(zip(z, reference.storage).allSatisfy { abs($0 - $1) <= 1e-5 * scale }, "bf16, path \(path)")
        }
    }

    @Test("stored f16 rows and other ranks are declined, so the caller decodes")
    func declines() {
        let b = Matrix(rows: 4, cols: 32)
        var z = [Float](repeating: 0, count: 64)
        let f16 = FloatConversion.encode([Float](repeating: 1, count: 8), as: .f16)
        #expect(!f16.withUnsafeBytes { RankProjection.project(stored: $0, dtype: .f16, rows: 2, cols: 4, b: b, into: &z) })
        let bf16 = FloatConversion.encode([Float](repeating: 1, count: 8), as: .bf16)
        #expect(!bf16.withUnsafeBytes { RankProjection.project(stored: $0, dtype: .bf16, rows: 2, cols: 4, b: Matrix(rows: 4, cols: 16), into: &z) })
    }

    @Test("vectorized bf16 stochastic rounding is byte-identical to the generic loop with SplitMix64, across calls")
    func stochasticRounding() {
        var source = SplitMix64(seed: 42)
        var values = (0..<100_003).map { _ in source.nextGaussian() * 3 }
        // Specials and edges: NaN, ±inf, the largest floats (a step up would overflow), zeros, subnormals,
        // values already on the bf16 grid.
        values[0..<10] = [.nan, .infinity, -.infinity, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                          0, -0.0, .leastNonzeroMagnitude, 1.5, -2.25]
        for pieces in [[100_003], [1, 2, 3, 31, 32, 33, 99_901]] {
            var a = SplitMix64(seed: 7), b = SplitMix64(seed: 7)
            var start = 0
            for count in pieces {
                let slice = Array(values[start..<(start + count)])
                let generic = FloatConversion.encodeStochastically(slice, as: .bf16, using: &a)
                var fast = [UInt8](repeating: 0, count: 2 * count)
                slice.withUnsafeBufferPointer { v in
                    fast.withUnsafeMutableBytes { FloatConversion.encodeBF16Stochastically(v, into: $0, splitMixState: &b.state) }
                }
                #expect(fast == generic, "pieces \(pieces), piece of \(count)")
                start += count
            }
            #expect(a.state == b.state)
        }
    }

    @Test("sum of squares of bf16 values is exact to double rounding on every code path", arguments: [0, 1, 15, 16, 17, 10_007])
    func bf16SumOfSquares(_ count: Int) {
        var source = SplitMix64(seed: UInt64(count) + 5)
        let values = (0..<count).map { _ in source.nextGaussian() * 0.05 }
        let stored = FloatConversion.encode(values, as: .bf16)
        let decoded = stored.withUnsafeBytes { FloatConversion.decode($0, dtype: .bf16) }
        // Squares of bf16 values are exact in double; a sorted sum is a reference within a few ulp.
        let reference = decoded.map { Double($0) * Double($0) }.sorted().reduce(0, +)
        for path in KeyedGenerator.gaussianCodePaths.map(Int32.init) {
            var sum = 1.0 // the kernel adds to what is there
            stored.withUnsafeBytes { raw in
                weightmark_bf16_sum_squares(path, raw.baseAddress?.assumingMemoryBound(to: UInt16.self), count, &sum)
            }
            #expect(abs(sum - 1 - reference) <= 1e-12 * max(reference, 1e-300) + 1e-15, "code path \(path)")
        }
    }

    @Test("pooled output buffers are page-aligned, reused by exact size, and kept idle up to the byte budget")
    func bufferPool() {
        let page = 4096
        let pool = ByteBufferPool(keepBytes: 3 * page + 3000)
        var a: PooledBytes? = pool.take(1000, lead: 100)
        let aStorage = a!.storage.baseAddress
        #expect(Int(bitPattern: aStorage) % page == 0 && a!.placed.lead == 100 && a!.bytes.baseAddress == UnsafeRawPointer(aStorage! + 100))
        a!.mutableBytes.initializeMemory(as: UInt8.self, repeating: 7)
        a = nil
        // Held in an array and returned by removing them in order: an optimized build may end a variable's lifetime
        // at its last use, so the order in which variables set to nil release their objects is not guaranteed.
        var held = [pool.take(1000, lead: 4095)] // same size, any lead: reused
        #expect(held[0].storage.baseAddress == aStorage && held[0].count == 1000 && held[0].bytes.count == 1000)
        held.append(pool.take(600)) // another size: a new buffer
        #expect(held[1].storage.baseAddress != aStorage)
        held.append(pool.take(2000))
        let (cStorage, dStorage) = (held[1].storage.baseAddress, held[2].storage.baseAddress)
        // Returned in the order b, c, d: idle 3·4096 + 3600 bytes exceed the budget, so b's buffer goes.
        while !held.isEmpty { held.removeFirst() }
        #expect(pool.idleBytes == 2 * page + 2600)
        let e = pool.take(2000), f = pool.take(600)
        #expect(e.storage.baseAddress == dStorage && f.storage.baseAddress == cStorage && pool.idleBytes == 0)
    }

    @Test("ordered prefetcher: results in order, pending bytes within the budget, errors delivered")
    func prefetcherBudget() throws {
        let lock = NSLock()
        // `pending` counts results started and not yet taken as this test sees them; the prefetcher frees a result's
        // budget inside `take`, a moment before the test's own decrement, so while `take(i)` runs the true pending
        // cost is at least `pending − inTake`: that lower bound is what must stay within the budget rule.
        nonisolated(unsafe) var pending = 0, maxPending = 0, inTake = 0
        let costs = [300, 300, 300, 900, 100, 100, 100, 100, 50, 50]
        let p = OrderedPrefetcher<Int>(count: costs.count, concurrency: 2, minimumAhead: 2, budget: 700, cost: { costs[$0] }) { i in
            lock.withLock {
                pending += costs[i]
                maxPending = max(maxPending, pending - inTake)
            }
            usleep(2000)
            if i == 7 { throw TensorIOError.writeFailed(path: "x", reason: "test") }
            return i * i
        }
        for i in 0..<7 {
            lock.withLock { inTake = costs[i] }
            #expect(try p.take(i) == i * i)
            lock.withLock { pending -= costs[i]; inTake = 0 }
        }
        #expect(throws: TensorIOError.self) { try p.take(7) }
        p.drain()
        // 900 alone exceeds the budget but runs once fewer than 2 results are pending (with at most one other).
        #expect(maxPending <= 900 + 300)
    }

    @Test("drain: once the workers wait on the budget, draining stops them and no further work starts")
    func prefetcherDrainStopsWork() throws {
        let lock = NSLock()
        nonisolated(unsafe) var started = 0
        // Unit costs, budget 3, one result ahead at least: after take(0) the workers run items 1…3 (pending cost
        // 3) and then wait, however they are scheduled; 996 items remain that only drain can stop.
        let p = OrderedPrefetcher<Int>(count: 1000, concurrency: 2, minimumAhead: 1, budget: 3, cost: { _ in 1 }) { i in
            lock.withLock { started += 1 }
            return i
        }
        #expect(try p.take(0) == 0)
        let deadline = Date().addingTimeInterval(10)
        while lock.withLock({ started }) < 4, Date() < deadline { usleep(1000) }
        #expect(lock.withLock { started } == 4, "items 0…3 start before the budget binds")
        // drain() waits for the workers; if they were not told to stop it would never return.
        let drained = DispatchSemaphore(value: 0)
        DispatchQueue.global().async { p.drain(); drained.signal() }
        #expect(drained.wait(timeout: .now() + 10) == .success, "drain did not return within 10 s")
        #expect(lock.withLock { started } == 4, "work started after drain")
    }

    @Test("fused bf16 marking pass equals add, stochastic rounding and distortion done step by step", arguments: [false, true])
    func fusedMarking(_ magnitude: Bool) {
        var source = SplitMix64(seed: 9)
        let count = 10_007
        let weights = FloatConversion.encode((0..<count).map { _ in source.nextGaussian() * 0.02 }, as: .bf16)
        let w = weights.withUnsafeBytes { FloatConversion.decode($0, dtype: .bf16) }
        let p = (0..<count).map { _ in source.nextGaussian() }
        let beta: Float = 3e-4, scale: Float = magnitude ? 47.5 : 0
        // Step by step, as Embedder's generic path does it.
        var a = SplitMix64(seed: 123)
        let marked = (0..<count).map { magnitude ? w[$0] + beta * (abs(w[$0]) * scale) * p[$0] : w[$0] + beta * p[$0] }
        let expected = FloatConversion.encodeStochastically(marked, as: .bf16, using: &a)
        let stored = expected.withUnsafeBytes { FloatConversion.decode($0, dtype: .bf16) }
        let expectedDiff2 = zip(stored, w).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
        // Fused, on every code path.
        for path in KeyedGenerator.gaussianCodePaths.map(Int32.init) {
            var b = SplitMix64(seed: 123)
            var out = [UInt16](repeating: 0, count: count)
            var diff2 = 0.0
            weights.withUnsafeBytes { raw in
                weightmark_mark_bf16(path, raw.baseAddress!.assumingMemoryBound(to: UInt16.self), p, beta, scale, count, &out, &b.state, &diff2)
            }
            #expect(out.withUnsafeBytes { Array($0) } == expected, "code path \(path)")
            #expect(b.state == a.state)
            #expect(abs(diff2 - expectedDiff2) <= 1e-5 * expectedDiff2)
        }
    }

    @Test("pattern rows (A S)·Bᵀ from the kernel equal BLAS on every code path", arguments: [(1, 1), (5, 37), (12, 64), (29, 300), (131, 513)])
    func pattern(_ k: Int, _ n: Int) {
        var rng = SplitMix64(seed: UInt64(k * 31 + n))
        let c = Matrix(rows: k, cols: 32, storage: (0..<(k * 32)).map { _ in rng.nextGaussian() })
        let b = Matrix(rows: n, cols: 32, storage: (0..<(n * 32)).map { _ in rng.nextGaussian() })
        let reference = BLAS.matmul(c, b, transB: .transposed)
        let packed = RankProjection.packForPattern(b)
        for path in KeyedGenerator.gaussianCodePaths.map(Int32.init) {
            var p = [Float](repeating: .nan, count: k * n)
            weightmark_pattern32(path, c.storage, k, packed, n, &p)
            #expect(zip(p, reference.storage).allSatisfy { abs($0 - $1) <= 1e-4 }, "code path \(path)")
        }
    }

    @Test("bf16 rows at an odd file offset (decoded, not read in place) give the same evidence")
    func unalignedStoredRows() throws {
        let dir = Fixtures.temporaryDirectory("unaligned")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try Fixtures.writeSmallModel(to: dir + "/a.safetensors", dtype: .bf16)
        // The same file with one more space in the header: every tensor starts at an odd offset.
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/a.safetensors")))
        let n = Int(bytes[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        Fixtures.write(Fixtures.rawSafetensors(headerBytes: Array(bytes[8..<(8 + n)]) + [0x20], data: Array(bytes[(8 + n)...])),
                       to: dir + "/b.safetensors")
        let key = WatermarkKey(secret: Array(repeating: 5, count: 32))
        let aligned = try Detector.detect(suspect: SafetensorsModel(path: dir + "/a.safetensors"), reference: nil, key: key, options: DetectOptions())
        let odd = try Detector.detect(suspect: SafetensorsModel(path: dir + "/b.safetensors"), reference: nil, key: key, options: DetectOptions())
        #expect(aligned.tensors.count == 4)
        // The same up to float rounding, not bit for bit: rows read in place go through WeightMark's bf16 kernel,
        // decoded rows through BLAS's sgemm, whose summation order depends on the CPU's kernel (AVX-512 machines
        // differ in the 7th digit). The verdict and every statistic agree to 1e-6 relative.
        func close(_ a: [Double], _ b: [Double]) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($0)) }
        }
        #expect(close(aligned.tensors.map(\.correlation), odd.tensors.map(\.correlation)),
                "\(aligned.tensors.map(\.correlation)) vs \(odd.tensors.map(\.correlation))")
        #expect(close(aligned.tensors.map(\.norm), odd.tensors.map(\.norm)))
        #expect(aligned.detected == odd.detected)
    }
}

@Suite("Format v2 pattern rows")
struct TilePatternRowsTests {
    /// The pattern the marking core adds, filled in uneven row blocks, equals `U_r S_ij U_cᵀ` computed tile by tile in
    /// double precision: on the one-product path (width a multiple of 128) and on the per-tile path (an edge column
    /// tile), with edge row tiles and blocks that cross tile rows.
    @Test("filled in uneven blocks, the pattern equals U_r S_ij U_cᵀ tile by tile", arguments: [(300, 384), (256, 200), (128, 128), (77, 1000)])
    func matchesTileByTile(_ m: Int, _ n: Int) throws {
        let tiles = try TileCarriers(secret: (0..<32).map { UInt8(truncatingIfNeeded: $0 &* 29 &+ 3) })
        var filled = [Float](repeating: .nan, count: m * n)
        var rows = TilePatternRows(tiles: tiles, rows: m, cols: n)
        var start = 0, step = 7
        while start < m {
            let end = min(m, start + step)
            filled.withUnsafeMutableBufferPointer { rows.fill(rows: start..<end, into: $0.baseAddress! + start * n) }
            start = end
            step = step * 3 % 151 + 1
        }
        let allFilled = filled.allSatisfy { $0.isFinite }
        #expect(allFilled, "some weights were not filled")
        let g = TileCarriers.size, a = TileCarriers.rank
        var worst = 0.0
        for i in 0..<TileCarriers.tiles(m) {
            for j in 0..<TileCarriers.tiles(n) {
                let r = TileCarriers.extent(i, of: m), c = TileCarriers.extent(j, of: n)
                let s = tiles.pattern(row: i, column: j), ur = tiles.carrier(r), uc = tiles.carrier(c)
                // T = S U_cᵀ (rank × c), then each weight is U_r[x] · T[:, y].
                var t = [Double](repeating: 0, count: a * c)
                for p in 0..<a { for y in 0..<c { for q in 0..<a { t[p * c + y] += Double(s[p * a + q]) * Double(uc[y, q]) } } }
                for x in 0..<r {
                    for y in 0..<c {
                        var v = 0.0
                        for p in 0..<a { v += Double(ur[x, p]) * t[p * c + y] }
                        worst = max(worst, abs(v - Double(filled[(i * g + x) * n + j * g + y])))
                    }
                }
            }
        }
        #expect(worst <= 1e-5, "max |difference| \(worst)")
    }
}

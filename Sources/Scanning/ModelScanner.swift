import CTensorIOKernels
import Crypto
import Foundation
import Glibc
import TensorIO
import Watermarking

/// Which mark formats a sweep tests.
public enum ScanMarkVersions: String, Sendable, Codable, CaseIterable {
    /// v2 always; v1 too where the format keeps tensor names (everything but a bare .npy). Each format is paid for.
    case auto
    /// v2 (name-free) only.
    case v2
}

/// How a sweep tests each model.
public struct ScanOptions: Sendable {
    /// Keys and the files they came from (named in the re-check command of a hit).
    public var keys: [(key: WatermarkKey, file: String)] = []
    /// Family-wise false-positive probability over every model × key × stage × format.
    public var alpha = 1e-6
    /// Models the family-wise threshold is paid for (the size of the whole sweep, across shards).
    public var familyModels = 1_000_000
    /// Blind Z a marked, unattacked model gives when every matrix is read: embed's default target.
    public var expectedZ = 20.0
    /// The sample is sized so that its expected Z is this far above the threshold.
    public var sampleMargin = 2.5
    /// A sample Z below the threshold but at least this high reads the whole model.
    public var escalateZ = 3.0
    public var formats = ScanMarkVersions.auto
    /// Models larger than this many bytes are skipped (reported); archive members too.
    public var maxBytes: Int?
    /// Seconds per model; a model still running then is reported as timed out.
    public var timeout: Double?
    /// Archives inside archives are opened to this depth.
    public var maxArchiveDepth = 3
    /// Tensors detected at once (nil: detection's default, one per core up to two).
    public var workers: Int?
    public init() {}

    /// Tests per key paid for in a model: (sample, full) × formats.
    /// Stages × formats, and with a sample one more: the v2 sample is read as stored transposed too (its pilots can
    /// be too few to tell a transposed copy).
    func testsPerKey(stages: Int, triesV1: Bool) -> Int { stages * (triesV1 ? 2 : 1) + (stages == 2 ? 1 : 0) }

    public var threshold: ScanThreshold {
        ScanThreshold(alpha: alpha, models: familyModels, keys: keys.count, testsPerKey: testsPerKey(stages: 2, triesV1: formats == .auto))
    }
}

/// Scans models for the marks of many keys: header-only triage, then keyed detection on a sample of matrices,
/// then a full read only when the sample is borderline (README.md, "Sweeping storage for leaks").
/// Sendable: used from one thread only (the scan loop), so `scratch` (created on first use), `memberSlots` and
/// `nonModelFiles` need no lock.
public final class ModelScanner: @unchecked Sendable {
    public let options: ScanOptions
    public let shard: ScanShard
    private var scratch: String?
    /// Scratch member files and their slots in the interrupt-cleanup table (`weightmark_register_temporary`).
    private var memberSlots: [String: Int32] = [:]

    public init(options: ScanOptions, shard: ScanShard) {
        self.options = options
        self.shard = shard
    }

    deinit { if let scratch { try? FileManager.default.removeItem(atPath: scratch) } }

    /// Files read so far that held no model.
    public private(set) var nonModelFiles = 0

    /// Records for one unit of the walk: none for a file that holds no model, one per model otherwise (an archive
    /// may hold several).
    public func scan(_ unit: ScanUnit) -> [ScanRecord] {
        switch unit.kind {
        case let .problem(status, reason):
            return [record(path: unit.path, format: nil, bytes: 0, status: status, reason: reason, ms: 0)]
        case .folder:
            return [scanModel(path: unit.path, label: unit.label ?? unit.path, relativePath: unit.relativePath, format: nil, recheck: nil)]
        case .file:
            // A name that is not UTF-8 is read through a link; its recheck names the original bytes.
            let recheck = unit.rawPath.map { raw in { (command: String) in
                command.replacingOccurrences(of: "weightmark detect member ", with: "weightmark detect \(NameLinks.shellBytes(raw)) ") } }
            return scanFile(path: unit.path, label: unit.label ?? unit.path, relativePath: unit.relativePath, depth: 0, recheck: recheck)
        }
    }

    func record(path: String, format: String?, bytes: Int, status: ScanStatus, reason: String?, ms: Int) -> ScanRecord {
        ScanRecord(path: path, format: format, bytes: bytes, bytesRead: 0, status: status, reason: reason, hits: [], scores: [],
                   testsPerKey: 0, sampledMatrices: nil, candidateMatrices: nil, ms: ms, shard: shard.description)
    }

    /// What a file's first bytes say it is.
    enum Sniffed {
        case model(FileFormat)
        case tar
        case zipArchive
        /// Looks like a model but cannot be one as it stands.
        case broken(String)
        case nothing
    }

    static func readPrefix(_ path: String, count: Int) throws -> (bytes: [UInt8], size: Int) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TensorIOError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw TensorIOError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        var buf = [UInt8](repeating: 0, count: count)
        let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, 0) }
        guard n >= 0 else { throw TensorIOError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        return (Array(buf[0..<n]), Int(st.st_size))
    }

    /// Sniffs from the first 512 bytes and the size; only ZIPs are opened further (their directory).
    static func sniff(prefix b: [UInt8], size: Int, path: String?) -> Sniffed {
        if b.count >= 9, b[8] == UInt8(ascii: "{") {
            let length = b.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
            if length <= SafetensorsHeader.maximumHeaderLength {
                if Int(length) + 8 > size {
                    return .broken("safetensors header of \(length) bytes but the file has \(size): truncated")
                }
                return .model(.safetensors)
            }
        }
        if TarMembers.looksLikeTar(b) { return .tar }
        let format = b.withUnsafeBytes { FileFormat.detect(prefix: $0) }
        switch format {
        case .safetensors: return .nothing // the reader's fallback for unknown bytes
        case .pytorchZip:
            guard let path else { return .zipArchive }
            switch try? FileFormat.detect(path: path) {
            case .pytorchZip?: return .model(.pytorchZip)
            case .npz?: return .model(.npz)
            case let .unsupported(d, h)? where !d.hasPrefix("a ZIP archive"): return .model(.unsupported(description: d, hint: h))
            default: return .zipArchive
            }
        case .onnx:
            // A weak magic (3 bytes) that random binary data matches now and then: only by name.
            return (path ?? "").hasSuffix(".onnx") ? .model(format) : .nothing
        case let .unsupported(d, _) where d.hasPrefix("a TensorFlow Lite"):
            // Weak magics (3–4 bytes) that random binary data matches now and then: only by name.
            let p = path ?? ""
            return p.hasSuffix(".onnx") || p.hasSuffix(".tflite") ? .model(format) : .nothing
        default: return .model(format)
        }
    }

    func scanFile(path: String, label: String, relativePath: String, depth: Int, recheck: ((String) -> String)?) -> [ScanRecord] {
        let start = DispatchTime.now()
        func ms() -> Int { Int((DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1_000_000) }
        let prefix: [UInt8], size: Int
        do { (prefix, size) = try Self.readPrefix(path, count: 512) } catch {
            return [record(path: label, format: nil, bytes: 0, status: .error, reason: "\(error)", ms: ms())]
        }
        switch Self.sniff(prefix: prefix, size: size, path: path) {
        case .nothing:
            nonModelFiles += 1
            return []
        case let .broken(reason):
            var r = record(path: label, format: "safetensors", bytes: size, status: .error, reason: reason + "; a complete copy is needed to test it", ms: ms())
            r.bytesRead = prefix.count
            return [r]
        case .tar:
            return scanArchive(path: path, label: label, relativePath: relativePath, depth: depth, isTar: true, size: size)
        case .zipArchive:
            return scanArchive(path: path, label: label, relativePath: relativePath, depth: depth, isTar: false, size: size)
        case let .model(format):
            return [scanModel(path: path, label: label, relativePath: relativePath, format: format, recheck: recheck)]
        }
    }

    // MARK: Archives

    func scratchDirectory() throws -> String {
        if let scratch { return scratch }
        let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array((base + "/weightmark-scan-XXXXXX").utf8CString)
        guard let p = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TensorIOError.cannotOpen(path: base, reason: "cannot create a scratch folder for archive members: \(String(cString: strerror(errno)))")
        }
        scratch = String(cString: p)
        // Removed (once emptied) if the sweep is interrupted.
        _ = weightmark_register_temporary(scratch!)
        return scratch!
    }

    /// Copies an archive member to a private scratch file (mode 0600), outside every scanned tree.
    func extract(_ bytes: () throws -> [UInt8], streamFrom: (fd: Int32, offset: Int, size: Int)?) throws -> String {
        let dir = try scratchDirectory()
        let path = dir + "/member-\(UUID().uuidString)"
        let out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw TensorIOError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
        memberSlots[path] = weightmark_register_temporary(path)
        defer { close(out) }
        func write(_ chunk: UnsafeRawBufferPointer) throws {
            var done = 0
            while done < chunk.count {
                let n = Glibc.write(out, chunk.baseAddress! + done, chunk.count - done)
                guard n > 0 else { throw TensorIOError.cannotOpen(path: path, reason: "write failed: \(String(cString: strerror(errno)))") }
                done += n
            }
        }
        if let s = streamFrom {
            var buf = [UInt8](repeating: 0, count: 1 << 20)
            var copied = 0
            while copied < s.size {
                let want = min(buf.count, s.size - copied)
                let n = buf.withUnsafeMutableBytes { pread(s.fd, $0.baseAddress, want, off_t(s.offset + copied)) }
                guard n > 0 else { throw TensorIOError.cannotOpen(path: path, reason: "archive ended early") }
                try buf.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                copied += n
            }
        } else {
            try bytes().withUnsafeBytes { try write($0) }
        }
        return path
    }

    static func shellQuoted(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    /// A zip member name as an `unzip` pattern that matches exactly that member: wildcard characters escaped, and a
    /// leading "-" written as "[-]" so it cannot be read as an option.
    static func unzipPattern(_ name: String) -> String {
        var out = ""
        for (i, c) in name.enumerated() {
            if i == 0 && c == "-" { out += "[-]"; continue }
            if "*?[]\\".contains(c) { out += "\\" }
            out.append(c)
        }
        return out
    }

    func scanArchive(path: String, label: String, relativePath: String, depth: Int, isTar: Bool, size: Int) -> [ScanRecord] {
        let kind = isTar ? "tar" : "ZIP"
        guard depth < options.maxArchiveDepth else {
            return [record(path: label, format: kind, bytes: size, status: .skipped,
                           reason: "\(kind) archive nested deeper than \(options.maxArchiveDepth) archives: not opened", ms: 0)]
        }
        var out: [ScanRecord] = []
        var anyModel = false
        func member(_ name: String, size memberSize: Int, prefix: [UInt8], materialize: () throws -> String) {
            let memberLabel = label + "!" + name
            let sniffed = Self.sniff(prefix: prefix, size: memberSize, path: nil)
            if case .nothing = sniffed { nonModelFiles += 1; return }
            anyModel = true
            if let cap = options.maxBytes, memberSize > cap {
                out.append(record(path: memberLabel, format: nil, bytes: memberSize, status: .skipped,
                                  reason: "archive member of \(memberSize) bytes, larger than --max-bytes \(cap): not extracted", ms: 0))
                return
            }
            do {
                let tmp = try materialize()
                defer {
                    try? FileManager.default.removeItem(atPath: tmp)
                    if let slot = memberSlots.removeValue(forKey: tmp) { weightmark_unregister_temporary(slot) }
                }
                let extractCommand = depth == 0
                    // Every argument quoted; tar's options ended with `--` and wildcards off, unzip's pattern escaped, so
                    // a hostile member name is only ever a name (no option, no glob).
                    ? (isTar ? "tar --no-wildcards -xOf \(Self.shellQuoted(path)) -- \(Self.shellQuoted(name)) > member"
                             : "unzip -p -- \(Self.shellQuoted(path)) \(Self.shellQuoted(Self.unzipPattern(name))) > member")
                    : "extract \(memberLabel) to member"
                out += scanFile(path: tmp, label: memberLabel, relativePath: relativePath + "!" + name, depth: depth + 1,
                                recheck: { detect in "\(extractCommand) && \(detect)" })
            } catch {
                out.append(record(path: memberLabel, format: nil, bytes: memberSize, status: .error, reason: "cannot extract: \(error)", ms: 0))
            }
        }
        do {
            if isTar {
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw TensorIOError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
                defer { close(fd) }
                func read(_ offset: Int, _ count: Int) throws -> [UInt8] {
                    var buf = [UInt8](repeating: 0, count: count)
                    let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
                    guard n >= 0 else { throw TensorIOError.cannotOpen(path: path, reason: String(cString: strerror(errno))) }
                    return Array(buf[0..<n])
                }
                for m in try TarMembers.list(read: read, size: size) {
                    member(m.name, size: m.size, prefix: try read(m.offset, min(512, m.size))) {
                        try self.extract({ [] }, streamFrom: (fd, m.offset, m.size))
                    }
                }
            } else {
                let archive = try ZipArchive(path: path)
                for e in archive.directory.entries where !e.name.hasSuffix("/") {
                    let prefix: [UInt8]
                    switch e.method {
                    case .stored: prefix = archive.withStoredBytes(of: e) { Array($0.prefix(512)) }
                    case .deflated:
                        do {
                            prefix = try archive.mapping.withBytes { (all) throws(ZipFormatError) in
                                try ZipArchive.inflatePrefix(UnsafeRawBufferPointer(rebasing: all[e.dataRange]), count: min(512, e.uncompressedSize), name: e.name)
                            }
                        } catch {
                            throw TensorIOError.invalidZip(path: path, reason: error)
                        }
                    }
                    member(e.name, size: e.uncompressedSize, prefix: prefix) { try self.extract({ try archive.contents(of: e) }, streamFrom: nil) }
                }
            }
        } catch {
            out.append(record(path: label, format: kind, bytes: size, status: .error, reason: "\(error)", ms: 0))
            return out
        }
        if !anyModel { nonModelFiles += 1 }
        return out
    }

    // MARK: Models

    /// Size and modification time of every file a model reads, to notice a model changing under the scan.
    static func fingerprint(_ path: String) -> [String: [Int]] {
        var st = stat()
        guard stat(path, &st) == 0 else { return [:] }
        func fp(_ s: stat) -> [Int] { [Int(s.st_size), Int(s.st_mtim.tv_sec), Int(s.st_mtim.tv_nsec)] }
        if (st.st_mode & S_IFMT) != S_IFDIR { return [path: fp(st)] }
        var out: [String: [Int]] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
            var s = stat()
            if stat(path + "/" + name, &s) == 0, (s.st_mode & S_IFMT) == S_IFREG { out[name] = fp(s) }
        }
        return out
    }

    /// Deterministic sample order: SHA-256 of the model's relative path and the tensor's name (never the key).
    static func sampleOrder(_ tensors: [SourceTensor], relativePath: String) -> [SourceTensor] {
        func rank(_ t: SourceTensor) -> [UInt8] { Array(SHA256.hash(data: Data((relativePath + "\u{0}" + t.name).utf8))) }
        return tensors.map { ($0, rank($0)) }.sorted { $0.1.lexicographicallyPrecedes($1.1) }.map(\.0)
    }

    /// Matrices in sample order until `elements` weights are covered, passing over any that would overshoot the
    /// target by more than 5% while others remain (so a large embedding does not double the read); those are taken,
    /// in order, only if the target is not reached without them.
    static func sample(_ candidates: [SourceTensor], relativePath: String, elements target: Double) -> [SourceTensor] {
        var sample: [SourceTensor] = [], passed: [SourceTensor] = []
        var taken = 0.0
        for t in sampleOrder(candidates, relativePath: relativePath) where taken < target {
            let size = Double(t.shape.reduce(1, *))
            if taken + size <= 1.05 * target { sample.append(t); taken += size } else { passed.append(t) }
        }
        for t in passed where taken < target { sample.append(t); taken += Double(t.shape.reduce(1, *)) }
        return sample
    }

    func scanModel(path: String, label: String, relativePath: String, format sniffed: FileFormat?, recheck: ((String) -> String)?) -> ScanRecord {
        let start = DispatchTime.now()
        func ms() -> Int { Int((DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1_000_000) }
        let before = Self.fingerprint(path)
        let bytes = before.values.reduce(0) { $0 + $1[0] }
        var rec = record(path: label, format: sniffed?.name, bytes: bytes, status: .ok, reason: nil, ms: 0)
        if case let .unsupported(description, hint)? = sniffed {
            rec.status = .skipped
            rec.reason = "\(description): WeightMark does not read it" + (hint.isEmpty ? "" : " (\(hint))")
            rec.bytesRead = min(bytes, 512)
            rec.ms = ms()
            return rec
        }
        if let cap = options.maxBytes, bytes > cap {
            rec.status = .skipped
            rec.reason = "\(bytes) bytes, larger than --max-bytes \(cap): not read"
            return rec
        }
        let deadline = options.timeout.map { start + $0 } ?? .distantFuture
        var readNames = Set<String>()
        var headerBytes = 0
        var source: (any TensorSource)?
        do {
            // Stage 1: headers only.
            let model = try openTensorSource(path: path)
            source = model
            if rec.format == nil { rec.format = (try? FileFormat.detect(path: path))?.name }
            let all = model.sourceTensors
            let knownTensorBytes = all.reduce(0) { $0 + model.storedBytes(of: $1.name) }
            if let g = model as? GGUFModel { headerBytes = g.file.dataStart } else { headerBytes = max(0, bytes - knownTensorBytes) }
            let selection = TensorSelection()
            let candidates = all.filter { selection.selectsGeometry($0) }
            rec.candidateMatrices = candidates.count
            let coverage = ReadCoverage.of(model, selection: selection)
            guard !candidates.isEmpty else {
                rec.status = coverage.unreadTensors > 0 ? .inconclusive : .skipped
                let undecodable = all.filter { !$0.isFloating }.count
                rec.reason = "no 2-D floating-point matrix with at least \(selection.minimumElements) elements: nothing that can carry a mark"
                    + (undecodable > 0 ? " (\(undecodable) tensors stored in types this version cannot decode)" : "")
                rec.bytesRead = headerBytes
                rec.ms = ms()
                return rec
            }
            // Stage 2: the sample. Its expected Z (for a model marked at `expectedZ`) is the threshold plus a margin.
            let triesV1 = options.formats == .auto && sniffed != .npy
            let total = candidates.reduce(0) { $0 + $1.shape.reduce(1, *) }
            let fullTests = Double(options.familyModels) * Double(options.keys.count)
            let zSample = FamilyWise.zThreshold(alpha: options.alpha, tests: fullTests * Double(options.testsPerKey(stages: 2, triesV1: triesV1)))
            let fraction = min(1, pow((zSample + options.sampleMargin) / options.expectedZ, 2))
            let sample = Self.sample(candidates, relativePath: relativePath, elements: fraction * Double(total))
            let stages = sample.count < candidates.count ? 2 : 1
            let testsPerKey = options.testsPerKey(stages: stages, triesV1: triesV1)
            rec.testsPerKey = testsPerKey
            rec.sampledMatrices = sample.count
            let tests = fullTests * Double(testsPerKey)
            let sampleView = ScanView.make(model, exposing: sample, deadline: deadline)
            let fullView = ScanView.make(model, exposing: all, deadline: deadline)
            defer { readNames = sampleView.tensorsRead.union(fullView.tensorsRead) }
            let formats: [MarkVersionSearch] = triesV1 ? [.v2, .v1] : [.v2]
            for (key, keyFile) in options.keys {
                // Once a format is a hit for this key, the other cannot change the verdict (its test is paid for anyway).
                formatLoop: for format in formats {
                    var detectOptions = DetectOptions()
                    detectOptions.format = format
                    detectOptions.alpha = options.alpha
                    if let workers = options.workers { detectOptions.workers = workers }
                    func test(_ view: ScanView, stage: String) throws -> Bool {
                        try test(stage, Detector.detect(suspect: view, reference: nil, key: key, options: detectOptions))
                    }
                    func test(_ stage: String, _ report: DetectionReport) throws -> Bool {
                        // Z to 6 decimals: v2 pools tile positions in hash-table order, which differs between processes
                        // and moves the last bits; rounded, every shard and rerun reports the same record.
                        let z = report.combinedZ.isFinite ? (report.combinedZ * 1e6).rounded() / 1e6 : 0
                        rec.scores.append(ScanScore(keyId: key.id, format: format.rawValue, stage: stage, z: z))
                        let fw = FamilyWise.familywiseP(z: z, tests: tests)
                        guard fw <= options.alpha else { return false }
                        let detect = "weightmark detect \(recheck == nil ? Self.shellQuoted(path) : "member") --key \(Self.shellQuoted(keyFile)) --format \(format.rawValue)"
                        rec.hits.append(ScanHit(keyId: key.id, format: format.rawValue, stage: stage, z: z,
                                                p: pow(10, FamilyWise.log10P(z: z)), familywiseP: fw,
                                                recheck: recheck?(detect) ?? detect))
                        return true
                    }
                    guard stages == 2 else {
                        if try test(sampleView, stage: "full") { break formatLoop }
                        continue
                    }
                    var sampleZ: Double
                    if format == .v2 {
                        // A sample's pilots may be too few to tell a copy stored transposed: v2 reads it so as well,
                        // from the same projection.
                        let both = try Detector.detectV2BothOrientations(suspect: sampleView, key: key, options: detectOptions)
                        if try test("sample", both.chosen) { break formatLoop }
                        sampleZ = rec.scores.last?.z ?? 0
                        if try test("sample, read transposed", both.transposed) { break formatLoop }
                        sampleZ = max(sampleZ, rec.scores.last?.z ?? 0)
                    } else {
                        if try test(sampleView, stage: "sample") { break formatLoop }
                        sampleZ = rec.scores.last?.z ?? 0
                    }
                    if sampleZ >= options.escalateZ {
                        if try test(fullView, stage: "full") { break formatLoop }
                    }
                }
            }
            if rec.hits.isEmpty && coverage.isIncomplete {
                rec.status = .inconclusive
                rec.reason = "no hit in what was read, but " + coverage.summary + ": " + ReadCoverage.advice
            }
            let after = Self.fingerprint(path)
            if after != before {
                rec.status = .error
                rec.reason = "changed while it was being scanned: scan it again once it is complete"
            }
        } catch is ScanTimeout {
            rec.status = .timeout
            let keysDone = Set(rec.scores.map(\.keyId)).count
            rec.reason = "time limit of \(options.timeout ?? 0) s reached while testing key \(keysDone) of \(options.keys.count)"
        } catch {
            rec.status = .error
            rec.reason = "\(error)"
            if Self.fingerprint(path) != before { rec.reason! += " (the files changed while being scanned)" }
        }
        if let source { rec.bytesRead = headerBytes + readNames.reduce(0) { $0 + source.storedBytes(of: $1) } }
        else { rec.bytesRead = min(bytes, 512) }
        rec.ms = ms()
        return rec
    }
}

import Foundation
import TensorIO

/// Helpers shared by the test targets: temporary folders, raw safetensors builders, and access to the
/// Python oracles and the real MiniLM model that `make test` installs.
public enum Fixtures {
    /// The package root, found from this file's location.
    public static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// A fresh temporary directory. Every one is removed when the test process exits (suites keep
    /// multi-gigabyte fixtures in them for the whole run); `WEIGHTMARK_KEEP_TEMP=1` keeps them for inspection.
    public static func temporaryDirectory(_ label: String = "wm") -> String {
        let path = NSTemporaryDirectory() + "\(label)-\(UUID().uuidString.prefix(8))"
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        createdDirectories.withLock { paths in
            if paths.isEmpty { atexit { Fixtures.removeTemporaryDirectories() } }
            paths.append(path)
        }
        return path
    }

    private static let createdDirectories = Locked<[String]>([])

    private static func removeTemporaryDirectories() {
        guard ProcessInfo.processInfo.environment["WEIGHTMARK_KEEP_TEMP"] != "1" else { return }
        for path in createdDirectories.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: path) }
    }

    /// A safetensors file from a literal header and a data buffer, with no validation:
    /// the building block of malformed-file tests.
    public static func rawSafetensors(header: String, data: [UInt8], declaredLength: UInt64? = nil) -> [UInt8] {
        rawSafetensors(headerBytes: Array(header.utf8), data: data, declaredLength: declaredLength)
    }

    public static func rawSafetensors(headerBytes: [UInt8], data: [UInt8], declaredLength: UInt64? = nil) -> [UInt8] {
        var out: [UInt8] = []
        withUnsafeBytes(of: (declaredLength ?? UInt64(headerBytes.count)).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: headerBytes)
        out.append(contentsOf: data)
        return out
    }

    public static func write(_ bytes: [UInt8], to path: String) {
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }

    /// Deterministic pseudo-random floats with a Gaussian-ish spread (sum of uniforms), scaled by `scale`.
    public static func floats(count: Int, seed: UInt64, scale: Float = 0.02) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        func next() -> Float {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Float(state >> 40) / Float(1 << 24)
        }
        return (0..<count).map { _ in (next() + next() + next() + next() - 2) * 1.7 * scale }
    }

    // MARK: Python oracles

    /// The interpreter of the venv `make test` creates (or `WEIGHTMARK_PYTHON`), if present.
    public static var python: String? {
        if let p = ProcessInfo.processInfo.environment["WEIGHTMARK_PYTHON"], !p.isEmpty { return p }
        let p = packageRoot + "/.venv/bin/python"
        return FileManager.default.isExecutableFile(atPath: p) ? p : nil
    }

    /// True when oracle tests must run: under `make test` (which sets `WEIGHTMARK_REQUIRE_ORACLES=1`) a
    /// missing oracle is a failure, not a skip.
    public static var oraclesRequired: Bool { ProcessInfo.processInfo.environment["WEIGHTMARK_REQUIRE_ORACLES"] == "1" }
    public static var oraclesAvailable: Bool { python != nil || oraclesRequired }

    /// Runs a Python snippet with arguments; returns stdout, throws with stderr on failure.
    public static func runPython(_ script: String, arguments: [String] = []) throws -> String {
        guard let python else { throw OracleError(message: "no Python oracle: run `make venv` or set WEIGHTMARK_PYTHON") }
        return try run(python, ["-c", script] + arguments)
    }

    public struct OracleError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
        public init(message: String) { self.message = message }
    }

    /// Runs a program; returns stdout; throws with stderr when it exits non-zero.
    public static func run(_ executable: String, _ arguments: [String]) throws -> String {
        let r = try runProcess(executable, arguments)
        guard r.status == 0 else {
            throw OracleError(message: "\(executable) exited \(r.status): \(r.stderr)")
        }
        return r.stdout
    }

    /// Runs a program to completion; returns exit status, stdout and stderr (both pipes drained concurrently
    /// so neither can fill up and block the child).
    /// Runs `executable` to completion. `environment`, when given, replaces the inherited environment.
    public static func runProcess(_ executable: String, _ arguments: [String],
                                  environment: [String: String]? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if let environment { p.environment = environment }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        // Unsafe: written by the reader thread before it signals `done`; read here only after waiting for it.
        nonisolated(unsafe) var errData = Data()
        let done = DispatchSemaphore(value: 0)
        // A dedicated thread, not the global dispatch pool: tests that keep the pool busy (calibration's parallel
        // detection) would otherwise delay this read, and the child blocks on a full stderr pipe meanwhile.
        let reader = Thread { errData = err.fileHandleForReading.readDataToEndOfFile(); done.signal() }
        reader.start()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        done.wait()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }

    /// Lower-case hex of bytes, and back.
    public static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
    public static func bytes(fromHex s: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count / 2)
        var i = s.startIndex
        while i < s.endIndex, let j = s.index(i, offsetBy: 2, limitedBy: s.endIndex) {
            out.append(UInt8(s[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    /// Little-endian f32 values from hex (as numpy's `tobytes().hex()` prints them).
    public static func floats(fromHex s: String) -> [Float] {
        bytes(fromHex: s.trimmingCharacters(in: .whitespacesAndNewlines)).withUnsafeBytes { FloatConversion.decode($0, dtype: .f32) }
    }

    // MARK: Real model

    /// Path of MiniLM's `model.safetensors` fetched by `make model` (or `WEIGHTMARK_MINILM`), if present.
    public static var miniLM: String? {
        if let p = ProcessInfo.processInfo.environment["WEIGHTMARK_MINILM"], !p.isEmpty { return p }
        let p = packageRoot + "/.cache/minilm/model.safetensors"
        return FileManager.default.fileExists(atPath: p) ? p : nil
    }
    public static var miniLMAvailable: Bool { miniLM != nil || oraclesRequired }
}

extension Fixtures {
    /// The `weightmark` executable built next to the test bundle.
    public static var weightmarkExecutable: String {
        let bundleDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for dir in [bundleDir, bundleDir.deletingLastPathComponent()] {
            let p = dir.appendingPathComponent("weightmark").path
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return packageRoot + "/.build/debug/weightmark"
    }

    /// Runs `weightmark` with arguments; returns exit status, stdout and stderr.
    public static func weightmark(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProcess(weightmarkExecutable, arguments)
    }
}

extension Fixtures {
    /// A small transformer-like model: a few 2-D weight matrices (selected by default), a norm and a bias
    /// (never selected), written as one safetensors file. Deterministic from `seed`.
    @discardableResult
    public static func writeSmallModel(to path: String, seed: UInt64 = 42, dtype: DType = .f32,
                                       shapes: [(String, [Int])] = smallModelShapes) throws -> [String: [Float]] {
        var values: [String: [Float]] = [:]
        var tensors: [OutputTensor] = []
        for (k, (name, shape)) in shapes.enumerated() {
            let count = shape.reduce(1, *)
            var v = floats(count: count, seed: seed &+ UInt64(k) &* 7919)
            // Row-wise scale spread, as in trained layers.
            if shape.count == 2 {
                for i in 0..<shape[0] { let s = 0.5 + Float((i * 37) % 11) / 10; for j in 0..<shape[1] { v[i * shape[1] + j] *= s } }
            }
            let bytes = FloatConversion.encode(v, as: dtype)
            values[name] = bytes.withUnsafeBytes { FloatConversion.decode($0, dtype: dtype) }
            tensors.append(OutputTensor(name: name, dtype: dtype, shape: shape, bytes: bytes))
        }
        try SafetensorsWriter.write(tensors, metadata: [("format", "pt")], to: path, overwrite: true)
        return values
    }

    public static let smallModelShapes: [(String, [Int])] = [
        ("layers.0.attn.q_proj.weight", [256, 256]),
        ("layers.0.mlp.up_proj.weight", [512, 256]),
        ("layers.0.mlp.down_proj.weight", [256, 512]),
        ("layers.0.input_layernorm.weight", [256]),
        ("layers.0.mlp.up_proj.bias", [512]),
        ("embed_tokens.weight", [600, 256]),
    ]
}

extension Fixtures {
    /// A small Llama-like Hugging Face folder (config.json + model.safetensors). The defaults: 2 layers,
    /// hidden 256, 8 attention heads and 4 key-value heads (so q and k permute differently), FFN 512, vocab 1000.
    /// - Returns: the values written, by tensor name (as stored: rounded to `dtype`).
    @discardableResult
    public static func writeSmallLlama(to folder: String, seed: UInt64 = 11, layers: Int = 2, hidden: Int = 256,
                                       ffn: Int = 512, vocab: Int = 1000, heads: Int = 8, kvHeads: Int = 4,
                                       dtype: DType = .f32) throws -> [String: [Float]] {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let kvDim = hidden / heads * kvHeads
        var shapes: [(String, [Int])] = [("model.embed_tokens.weight", [vocab, hidden]), ("model.norm.weight", [hidden]),
                                         ("lm_head.weight", [vocab, hidden])]
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            shapes += [(p + "input_layernorm.weight", [hidden]), (p + "post_attention_layernorm.weight", [hidden]),
                       (p + "self_attn.q_proj.weight", [hidden, hidden]), (p + "self_attn.k_proj.weight", [kvDim, hidden]),
                       (p + "self_attn.v_proj.weight", [kvDim, hidden]), (p + "self_attn.o_proj.weight", [hidden, hidden]),
                       (p + "mlp.gate_proj.weight", [ffn, hidden]), (p + "mlp.up_proj.weight", [ffn, hidden]),
                       (p + "mlp.down_proj.weight", [hidden, ffn])]
        }
        let values = try writeSmallModel(to: folder + "/model.safetensors", seed: seed, dtype: dtype, shapes: shapes)
        let config = """
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": \(hidden), "intermediate_size": \(ffn),
         "num_attention_heads": \(heads), "num_key_value_heads": \(kvHeads), "num_hidden_layers": \(layers), "vocab_size": \(vocab),
         "max_position_embeddings": 2048, "rms_norm_eps": 1e-05, "rope_theta": 10000.0}
        """
        write(Array(config.utf8), to: folder + "/config.json")
        return values
    }
}

extension Fixtures {
    /// True when the llama.cpp oracle tests must run or can: under `make test` always (a missing
    /// llama-cpp-python then fails them), otherwise when the venv's Python can import `llama_cpp`.
    public static let llamaCppAvailable: Bool = {
        if oraclesRequired { return true }
        guard let python else { return false }
        return (try? runProcess(python, ["-c", "import llama_cpp"]).status) == 0
    }()

    /// Runs a subcommand of `Tests/Oracles/llama_oracle.py` (the real llama.cpp and numpy references) and
    /// returns the JSON object it prints; throws with its stderr when it fails.
    public static func llamaOracle(_ arguments: [String]) throws -> [String: Any] {
        guard let python else { throw OracleError(message: "no Python oracle: run `make venv` or set WEIGHTMARK_PYTHON") }
        let r = try runProcess(python, [packageRoot + "/Tests/Oracles/llama_oracle.py"] + arguments)
        guard r.status == 0, let line = r.stdout.split(separator: "\n").last,
              let json = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw OracleError(message: "llama_oracle.py \(arguments.joined(separator: " ")) exited \(r.status): \(r.stderr.suffix(2000))")
        }
        return json
    }
}

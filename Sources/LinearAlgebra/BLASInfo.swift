#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Which BLAS library the process is running on.
public struct BLASInfo: Sendable, CustomStringConvertible {
    /// OpenBLAS's configuration string ("OpenBLAS 0.3.21 DYNAMIC_ARCH …"), nil on other libraries.
    public let openBLASConfig: String?
    /// OpenBLAS's thread count, nil on other libraries.
    public let threadCount: Int?

    /// Queries the loaded library through `dlsym`, since which one is loaded is decided at run time by
    /// the system's alternatives, not at build time.
    public static var current: BLASInfo {
        guard let handle = dlopen(nil, RTLD_NOW) else { return BLASInfo(openBLASConfig: nil, threadCount: nil) }
        defer { dlclose(handle) }
        var config: String?
        var threads: Int?
        if let sym = dlsym(handle, "openblas_get_config") {
            typealias Fn = @convention(c) () -> UnsafePointer<CChar>?
            if let p = unsafeBitCast(sym, to: Fn.self)() { config = String(cString: p) }
        }
        if let sym = dlsym(handle, "openblas_get_num_threads") {
            typealias Fn = @convention(c) () -> Int32
            threads = Int(unsafeBitCast(sym, to: Fn.self)())
        }
        return BLASInfo(openBLASConfig: config, threadCount: threads)
    }

    /// OpenBLAS's kernel family ("Haswell", "SkylakeX", "Prescott", …), nil on other libraries.
    public static var coreName: String? {
        guard let handle = dlopen(nil, RTLD_NOW) else { return nil }
        defer { dlclose(handle) }
        guard let sym = dlsym(handle, "openblas_get_corename") else { return nil }
        typealias Fn = @convention(c) () -> UnsafePointer<CChar>?
        return unsafeBitCast(sym, to: Fn.self)().map { String(cString: $0) }
    }

    /// The core type to force when OpenBLAS fell back to its generic Prescott (SSE3) kernels on a CPU that
    /// has AVX2 and FMA (SkylakeX when AVX-512 F/BW/DQ/VL/CD are all present, else Haswell): Debian's OpenBLAS 0.3.21 does that on virtual CPUs reported as a generic "Intel
    /// Xeon Processor", which makes sgemm 3–10× slower. Nil when nothing needs fixing, when the user set
    /// OPENBLAS_CORETYPE, or when WEIGHTMARK_BLAS_AUTODETECT=1 asks to keep OpenBLAS's choice.
    public static var coreTypeCorrection: String? {
        let env = ProcessInfo.processInfo.environment
        guard env["OPENBLAS_CORETYPE"] == nil, env["WEIGHTMARK_BLAS_AUTODETECT"] != "1", coreName == "Prescott" else { return nil }
        guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        if ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"].allSatisfy(flags.contains) { return "SkylakeX" }
        return flags.contains("avx2") && flags.contains("fma") ? "Haswell" : nil
    }

    /// Sets OpenBLAS's thread count; returns false on other libraries.
    @discardableResult
    public static func setThreadCount(_ n: Int) -> Bool {
        guard let handle = dlopen(nil, RTLD_NOW) else { return false }
        defer { dlclose(handle) }
        guard let sym = dlsym(handle, "openblas_set_num_threads") else { return false }
        typealias Fn = @convention(c) (Int32) -> Void
        unsafeBitCast(sym, to: Fn.self)(Int32(n))
        return true
    }

    public var description: String {
        if let openBLASConfig {
            return "\(openBLASConfig.trimmingTrailingSpaces), \(threadCount ?? 1) thread(s)"
        }
        return "reference BLAS (netlib) or another non-OpenBLAS library, 1 thread"
    }
}

extension String {
    fileprivate var trimmingTrailingSpaces: String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}

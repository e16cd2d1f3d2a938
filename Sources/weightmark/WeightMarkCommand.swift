import ArgumentParser
import Foundation
import LinearAlgebra
import TensorIO
import Watermarking

@main
struct WeightMarkCommand: AsyncParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: "weightmark",
            abstract: "Watermark model weights, verify leaks, trace and sweep for them.",
            discussion: """
            Typical use:
              weightmark keygen --out owner.key
              weightmark embed model/ --key owner.key --out model-marked/
              weightmark detect suspect.gguf --key owner.key [--reference model/]
              weightmark scan /mnt/mirror --key owner.key > scan.jsonl

            Keep the owner key: embed records every release in owner.key.store/, and every command that asks \
            "is this ours" tries them all, paying for each in the bound. Exit codes: 0 found, 1 nothing \
            found, 2 error, 3 inconclusive. docs/CLI.md.
            """,
            version: "weightmark \(WeightMarkVersion.toolVersion) (watermark format v\(WeightMarkVersion.version))\nBLAS: \(BLASInfo.current)",
            subcommands: [Keygen.self, Embed.self, Detect.self, Align.self, LineageCommand.self, Trace.self, Scan.self, Timestamp.self, EvidenceCommand.self, Combine.self, Inspect.self, Convert.self, Attack.self, Bench.self, Synth.self, Demo.self]
        )
    }

    /// Runs the command and maps failures onto the documented exit codes: usage and runtime errors
    /// print one clear message on stderr and exit 2; `ExitCode` values pass through.
    static func main() async {
        // OpenBLAS picks its kernels when the library loads, so a misdetected CPU can only be corrected by
        // restarting with OPENBLAS_CORETYPE set (see BLASInfo.coreTypeCorrection). Harmless if exec fails.
        if let core = BLASInfo.coreTypeCorrection {
            setenv("OPENBLAS_CORETYPE", core, 1)
            let argv = CommandLine.unsafeArgv
            execv("/proc/self/exe", argv)
        }
        MappedFile.installCrashHandler()
        do {
            var command = try parseAsRoot(RawArguments.arguments())
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            if exitCode(for: error) == .success { exit(withError: error) } // --help, --version
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(2)
        }
    }
}

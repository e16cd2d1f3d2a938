import ArgumentParser
import Foundation
import TensorIO
import Watermarking

struct Keygen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a new secret watermark key.",
        discussion: """
        Writes 256 random bits from the system's secure generator to a JSON key file with mode 0600. \
        Keep it secret and back it up: without it, marks cannot be detected. Reports identify the key \
        by its key id (a hash of the secret), never by the secret itself. Never overwrites a file.

        Example:
          weightmark keygen --out owner.key
        """
    )

    @Option(name: .long, help: ArgumentHelp("Where to write the key.", valueName: "path"), completion: .file())
    var out: String

    @OptionGroup var output: OutputOptions

    func run() async throws {
        let key = WatermarkKey.generate()
        guard !FileManager.default.fileExists(atPath: out) else {
            throw CLIError("\(out) already exists; keys are never overwritten. Choose another path (or delete it yourself if you mean to).")
        }
        try key.save(to: out)
        if output.json {
            Console.out(try Console.json(["keyId": key.id, "path": out]))
        } else {
            Console.out("wrote \(out) (key id \(key.id), mode 0600). Keep it secret and backed up.")
        }
    }
}

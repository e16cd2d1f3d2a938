/// A failure found while a command runs (a file that exists, a bad manifest, an unwritable folder): printed as
/// one line on stderr with exit code 2, without the usage text that `ValidationError` adds for bad flags.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

import ArgumentParser

/// Output switches shared by every command.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print machine-readable JSON on stdout instead of the human report.")
    var json = false

    @Flag(name: [.short, .long], help: "Silence progress and notes on stderr.")
    var quiet = false
}

import ArgumentParser

/// Output switches shared by every command.
struct OutputOptions: ParsableArguments {
    @Flag(name: .long, help: "Print JSON on stdout instead of the human report.")
    var json = false

    @Flag(name: [.short, .long], help: "No progress or notes on stderr.")
    var quiet = false
}

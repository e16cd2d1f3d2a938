import ArgumentParser

@main
struct WeightMarkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "weightmark", abstract: "x")
}

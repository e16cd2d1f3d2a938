import ArgumentParser
import Watermarking

/// Tensor selection flags shared by `embed` and `detect`.
struct SelectionOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Also mark tensors whose name matches this glob (any 2-D float tensor; repeatable).", valueName: "glob"))
    var include: [String] = []

    @Option(name: .long, help: ArgumentHelp("Never mark tensors whose name matches this glob (repeatable; wins over --include).", valueName: "glob"))
    var exclude: [String] = []

    @Option(name: .long, help: ArgumentHelp("Carrier subspace dimension a = b.", valueName: "n"))
    var rank: Int = Carriers.defaultRank

    var selection: TensorSelection { TensorSelection(include: include, exclude: exclude) }

    /// Whether any selection flag differs from its default.
    var isCustomized: Bool { !include.isEmpty || !exclude.isEmpty || rank != Carriers.defaultRank }

    func validate() throws {
        guard (1...256).contains(rank) else { throw ValidationError("--rank must be between 1 and 256 (default \(Carriers.defaultRank)).") }
    }
}

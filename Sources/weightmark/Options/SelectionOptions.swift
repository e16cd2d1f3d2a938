import ArgumentParser
import Watermarking

/// Tensor selection flags shared by `embed` and `detect`.
struct SelectionOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Also select tensors matching this glob (repeatable).", valueName: "glob"))
    var include: [String] = []

    @Option(name: .long, help: ArgumentHelp("Never select tensors matching this glob (repeatable).", valueName: "glob"))
    var exclude: [String] = []

    @Option(name: .long, help: ArgumentHelp("Carrier subspace dimension a = b (format v1 only; v2's tiles are rank 32).", valueName: "n", visibility: .hidden))
    var rank: Int = Carriers.defaultRank

    var selection: TensorSelection { TensorSelection(include: include, exclude: exclude) }

    /// Whether any selection flag differs from its default.
    var isCustomized: Bool { !include.isEmpty || !exclude.isEmpty || rank != Carriers.defaultRank }

    func validate() throws {
        guard (1...256).contains(rank) else { throw ValidationError("--rank must be between 1 and 256 (default \(Carriers.defaultRank)).") }
    }

    /// --rank sets format v1's carrier rank only: under format v2 (fixed 32×32 tile patterns) it would be ignored, so
    /// it is refused there rather than silently dropped.
    func validate(format: MarkVersionSearch) throws {
        if rank != Carriers.defaultRank && format == .v2 {
            throw ValidationError("--rank applies to format v1 only (format v2 uses fixed rank-32 tiles): drop --rank, or pass --format v1.")
        }
    }

    /// The same rule for embed's --format.
    func validate(format: MarkVersion) throws {
        if rank != Carriers.defaultRank && format == .v2 {
            throw ValidationError("--rank applies to format v1 only (format v2 uses fixed rank-32 tiles): drop --rank, or pass --format v1.")
        }
    }
}

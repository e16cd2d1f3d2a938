import ArgumentParser
import Evidence
import Foundation
import Watermarking

/// The key material every command that asks "is this ours, whose is it" takes, resolved one way
/// (`KeyCandidates.resolve`): detect, evidence, trace, scan and bench.
struct KeyOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Owner key (tries its store's releases) or an opening.", valueName: "path"), completion: .file())
    var key: [String] = []

    @Option(name: .long, help: ArgumentHelp("Only this release of the owner key.", valueName: "id"))
    var release: String?

    @Option(name: .long, help: ArgumentHelp("A release's opening file (embed's OUT.opening.json).", valueName: "path"), completion: .file())
    var opening: String?

    @Option(name: .long, help: ArgumentHelp("The release's manifest (proves the key committed).", valueName: "path"), completion: .file())
    var manifest: String?

    @Option(name: .long, help: ArgumentHelp("Try the default release ids r1…rN (default: those the key store reserved; r1…r16 without a store; 0: none).", valueName: "n", visibility: .hidden))
    var enumerateReleases: Int?

    @Option(name: .long, help: ArgumentHelp("Also every *.key and *.opening.json in this folder.", valueName: "dir"), completion: .directory)
    var keysDir: String?

    /// Whether any key was given.
    var isEmpty: Bool { key.isEmpty && opening == nil && keysDir == nil }

    /// The key files of --keys-dir, sorted.
    func keysDirFiles() throws -> [String] {
        guard let keysDir else { return [] }
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: keysDir) else {
            throw CLIError("\(keysDir): cannot list the folder given to --keys-dir; check the path and permissions.")
        }
        let found = entries.filter { $0.hasSuffix(".key") || $0.hasSuffix(".opening.json") }.sorted().map { (keysDir as NSString).appendingPathComponent($0) }
        if found.isEmpty { throw CLIError("\(keysDir): no *.key or *.opening.json files (make keys with `weightmark keygen --out NAME.key`; `embed` writes a release's opening).") }
        return found
    }

    func validate() throws {
        if let enumerateReleases, !(0...10_000).contains(enumerateReleases) {
            throw ValidationError("--enumerate-releases must be between 0 and 10000 (default: the ids the key store reserved, or \(KeyStore.defaultEnumeratedReleases) without a store).")
        }
        if let release, !ReleaseKey.isValid(releaseID: release) { throw ValidationError(EvidenceError.invalidReleaseID(release).description) }
        if release != nil && (key.count != 1 || keysDir != nil) { throw ValidationError("--release narrows one owner key: give exactly one --key with it (and no --keys-dir).") }
    }

    /// The manifest, read once (nil without --manifest).
    func loadManifest() throws -> LoadedManifest? {
        try manifest.map { try EmbedManifest.load(path: $0) }
    }

    /// Every key to try, from every key file, opening and store given.
    /// - Throws: `EvidenceError`/`WatermarkError` naming the file when a piece is unreadable or pieces disagree.
    func resolve(manifest loaded: LoadedManifest?, quiet: Bool) throws -> KeyCandidates {
        guard !isEmpty else {
            throw CLIError("give --key OWNER.key (it finds every release recorded in OWNER.key.store) or --opening FILE.")
        }
        let manifestPair = loaded.map { ($0.manifest, path: $0.path) }
        var all: [KeyCandidate] = []
        var notes: [String] = []
        func add(_ c: KeyCandidates, from path: String) {
            notes += c.notes
            for var k in c.candidates where !all.contains(where: { $0.key.id == k.key.id }) {
                k.source = path
                all.append(k)
            }
        }
        if let opening {
            add(try KeyCandidates.resolve(owner: nil, ownerPath: nil, releaseID: release, opening: (try CommitmentOpening.load(from: opening), path: opening),
                                          manifest: manifestPair), from: opening)
        }
        for path in key + (try keysDirFiles()) {
            if Self.isOpening(path) {
                add(try KeyCandidates.resolve(owner: nil, ownerPath: nil, releaseID: nil, opening: (try CommitmentOpening.load(from: path), path: path),
                                              manifest: manifestPair), from: path)
            } else if opening == nil {
                let owner = try Console.loadKey(path, quiet: quiet)
                add(try KeyCandidates.resolve(owner: owner, ownerPath: path, releaseID: release, opening: nil, manifest: manifestPair,
                                              enumerate: enumerateReleases), from: path)
            } else {
                // With --opening, the owner key only checks that the opening is its own.
                let owner = try Console.loadKey(path, quiet: quiet)
                _ = try KeyCandidates.resolve(owner: owner, ownerPath: path, releaseID: release,
                                              opening: (try CommitmentOpening.load(from: opening!), path: opening!), manifest: manifestPair)
            }
        }
        for n in notes { Console.note("note: " + n, quiet: quiet) }
        return KeyCandidates(candidates: all, notes: notes)
    }

    /// Whether a key file is a release's opening (JSON with the opening's format name) rather than an owner key.
    static func isOpening(_ path: String) -> Bool {
        guard let data = FileManager.default.contents(atPath: path), data.count < 1 << 20,
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return false }
        return object["format"] as? String == CommitmentOpening.formatName
    }
}

/// The exit codes every command shares (root help and docs/CLI.md).
enum ExitStatus {
    /// Found: detected, accused, hit, evidence valid.
    static let found: Int32 = 0
    /// Nothing found (not detected, no one accused, no hit).
    static let nothingFound: Int32 = 1
    /// Error: bad input, unreadable file, refused overwrite.
    static let error: Int32 = 2
    /// Incomplete or inconclusive: part of what should have been read was not.
    static let inconclusive: Int32 = 3

    /// The line a help page ends with when the command only succeeds or fails.
    static let simpleTable = "Exit codes: 0 done, 2 error (named, with the fix). Shared table: docs/CLI.md."

    /// The one-paragraph table every help page ends with.
    static let table = "Exit codes: 0 found (detected, accused, hit), 1 nothing found, 2 error, 3 incomplete or inconclusive (part of the weights or files could not be read)."
}

import ArgumentParser
import Crypto
import Evidence
import Foundation
import TensorIO

struct Timestamp: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Request or verify an RFC 3161 timestamp of a manifest.",
        discussion: """
        A commitment counts only if it existed before the dispute. Request: writes a DER TimeStampReq \
        (SHA-256 of MANIFEST, a nonce) to --out; send it to a time-stamping authority, e.g.
          curl -s -H 'Content-Type: application/timestamp-query' --data-binary @REQ.tsq https://freetsa.org/tsr > TOKEN.tsr
        Verify (--verify MANIFEST TOKEN.tsr --ca TSA-CA.pem): checks status, CMS signature, message digest, \
        the manifest's hash, the nonce (--request) and the chain to the CA, offline; prints the time. \
        Details: docs/CLI.md#timestamp.

        Examples:
          weightmark timestamp model-marked.weightmark.json --out manifest.tsq
          weightmark timestamp --verify model-marked.weightmark.json manifest.tsr --ca tsa-ca.pem

        Exit codes: 0 written / valid, 1 the token does not verify (the field is named), 2 error.
        """
    )

    @Argument(help: ArgumentHelp("MANIFEST (request), or MANIFEST TOKEN.tsr (with --verify).", valueName: "file"), completion: .file())
    var files: [String]

    @Flag(name: .long, help: "Verify a timestamp response instead of writing a request.")
    var verify = false

    @Option(name: .long, help: ArgumentHelp("Where to write the request (DER).", valueName: "path"), completion: .file())
    var out: String?

    @Option(name: .long, help: ArgumentHelp("The TSA's CA certificate (PEM or DER), for --verify.", valueName: "path"), completion: .file())
    var ca: String?

    @Option(name: .long, help: ArgumentHelp("The request the token answers, so its nonce is checked (--verify).", valueName: "path"), completion: .file())
    var request: String?

    @Flag(name: .long, help: "Replace --out if it exists.")
    var force = false

    @OptionGroup var output: OutputOptions

    func validate() throws {
        if verify {
            guard files.count == 2 else { throw ValidationError("--verify takes MANIFEST and TOKEN.tsr.") }
            guard ca != nil else { throw ValidationError("--verify needs --ca TSA-CA.pem, the certificate the TSA's certificate chains to.") }
        } else {
            guard files.count == 1 else { throw ValidationError("give one MANIFEST to make a request for (or --verify MANIFEST TOKEN.tsr).") }
            guard out != nil else { throw ValidationError("give --out REQ.tsq, where to write the request.") }
        }
    }

    static func read(_ path: String, what: String) throws -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: path) else {
            throw CLIError("\(path): cannot read the \(what) (\(FileManager.default.fileExists(atPath: path) ? "permissions?" : "no such file")).")
        }
        return Array(d)
    }

    func run() async throws {
        let manifest = try Self.read(files[0], what: "file to time-stamp")
        if !verify {
            let req = TimeStampRequest.forData(manifest)
            try AtomicFileWriter.write(req.derEncoded, to: out!, overwrite: force)
            if output.json {
                Console.out(try Console.json(["request": out!, "sha256": req.messageImprint.map { String(format: "%02x", $0) }.joined(),
                                              "nonce": req.nonce.map { String(format: "%02x", $0) }.joined()]))
            } else {
                Console.out("wrote \(out!): RFC 3161 request for SHA-256 \(req.messageImprint.map { String(format: "%02x", $0) }.joined()) of \(files[0])")
                Console.out("  send it to a time-stamping authority, e.g.")
                Console.out("  curl -s -H 'Content-Type: application/timestamp-query' --data-binary @\(out!) https://freetsa.org/tsr > \(files[0]).tsr")
            }
            return
        }
        let token = try Self.read(files[1], what: "timestamp response")
        let roots = try TimeStampVerifier.loadCertificates(path: ca!)
        let nonce = try request.map { try TimeStampRequest(derEncoded: try Self.read($0, what: "timestamp request"), path: $0).nonce }
        do {
            let v = try await TimeStampVerifier.verify(response: token, path: files[1], fileDigest: Array(SHA256.hash(data: manifest)),
                                                       requestNonce: nonce, trustRoots: roots)
            if output.json {
                Console.out(try Console.json(v))
            } else {
                Console.out("VALID timestamp: \(files[0]) (SHA-256 \(v.messageImprint)) existed at \(v.genTimeText)")
                Console.out("  signed by \(v.signer), which chains to \(ca!); serial \(v.serialNumber), policy \(v.policy)\(v.nonceChecked ? "; nonce matches \(request!)" : "")")
            }
        } catch let e as EvidenceError where e.field != nil {
            Console.out("INVALID timestamp: \(e)")
            throw ExitCode(1)
        }
    }
}

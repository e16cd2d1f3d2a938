import Crypto
import Foundation
import SwiftASN1

/// An RFC 3161 TimeStampReq for the SHA-256 of a file: what `weightmark timestamp MANIFEST --out REQ.tsq` writes
/// for a time-stamping authority (`curl --data-binary @REQ.tsq -H 'Content-Type: application/timestamp-query' TSA`).
///
///     TimeStampReq ::= SEQUENCE { version INTEGER (1), messageImprint MessageImprint,
///                                 nonce INTEGER, certReq BOOLEAN (TRUE) }
///     MessageImprint ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier (sha256), hashedMessage OCTET STRING }
public struct TimeStampRequest: Sendable, Equatable {
    /// id-sha256 (2.16.840.1.101.3.4.2.1).
    static let sha256OID: [UInt] = [2, 16, 840, 1, 101, 3, 4, 2, 1]

    /// SHA-256 of the time-stamped file.
    public var messageImprint: [UInt8]
    /// Big-endian magnitude of the nonce (the TSA copies it into its answer, which proves the answer is fresh).
    public var nonce: [UInt8]
    public var certReq: Bool

    public init(messageImprint: [UInt8], nonce: [UInt8], certReq: Bool = true) {
        self.messageImprint = messageImprint
        self.nonce = Array(nonce.drop { $0 == 0 })
        self.certReq = certReq
    }

    /// A request for `data` with a fresh 64-bit random nonce.
    public static func forData(_ data: [UInt8]) -> TimeStampRequest {
        var g = SystemRandomNumberGenerator()
        var nonce = (0..<8).map { _ in UInt8.random(in: 0...255, using: &g) }
        nonce[0] |= 0x01 // never all zero
        return TimeStampRequest(messageImprint: Array(SHA256.hash(data: data)), nonce: nonce)
    }

    public var derEncoded: [UInt8] {
        DERBuilder.sequence(
            DERBuilder.integer(1),
            DERBuilder.sequence(DERBuilder.sequence(DERBuilder.objectIdentifier(Self.sha256OID)),
                                DERBuilder.octetString(messageImprint)),
            DERBuilder.integer(magnitude: nonce),
            DERBuilder.boolean(certReq))
    }

    /// Reads a TimeStampReq (ours or `openssl ts -query`'s) for its imprint and nonce.
    /// - Throws: `EvidenceError.timestamp` naming the field that does not parse.
    public init(derEncoded bytes: [UInt8], path: String) throws {
        let root: ASN1Node
        do { root = try DER.parse(bytes) } catch {
            throw EvidenceError.unreadable(path: path, reason: "not a DER-encoded RFC 3161 TimeStampReq (\(error))")
        }
        let items = try ASN1Walk.children(root, path: path, field: "TimeStampReq")
        guard items.count >= 2 else { throw EvidenceError.timestamp(path: path, field: "TimeStampReq", reason: "too few fields") }
        let imprint = try ASN1Walk.messageImprint(items[1], path: path)
        guard imprint.algorithm == Self.sha256OID.map(String.init).joined(separator: ".") else {
            throw EvidenceError.timestamp(path: path, field: "messageImprint", reason: "hash algorithm \(imprint.algorithm) is not SHA-256")
        }
        var nonce: [UInt8] = []
        var certReq = false
        for item in items.dropFirst(2) {
            if item.identifier == .integer { nonce = Array(try ASN1Walk.primitive(item, path: path, field: "nonce")) }
            if item.identifier == .boolean { certReq = try ASN1Walk.primitive(item, path: path, field: "certReq").first != 0 }
        }
        self.init(messageImprint: imprint.digest, nonce: nonce, certReq: certReq)
    }
}

/// Small helpers over swift-asn1's node tree that turn every shape mismatch into an error naming the field.
enum ASN1Walk {
    static func children(_ node: ASN1Node, path: String, field: String) throws -> [ASN1Node] {
        guard case let .constructed(c) = node.content else {
            throw EvidenceError.timestamp(path: path, field: field, reason: "expected a constructed ASN.1 value")
        }
        return Array(c)
    }

    static func primitive(_ node: ASN1Node, path: String, field: String) throws -> ArraySlice<UInt8> {
        guard case let .primitive(p) = node.content else {
            throw EvidenceError.timestamp(path: path, field: field, reason: "expected a primitive ASN.1 value")
        }
        return p
    }

    static func oid(_ node: ASN1Node, path: String, field: String) throws -> String {
        do { return try ASN1ObjectIdentifier(derEncoded: node).description } catch {
            throw EvidenceError.timestamp(path: path, field: field, reason: "expected an object identifier")
        }
    }

    /// An AlgorithmIdentifier's OID.
    static func algorithm(_ node: ASN1Node, path: String, field: String) throws -> String {
        let c = try children(node, path: path, field: field)
        guard let first = c.first else { throw EvidenceError.timestamp(path: path, field: field, reason: "empty AlgorithmIdentifier") }
        return try oid(first, path: path, field: field)
    }

    static func messageImprint(_ node: ASN1Node, path: String) throws -> (algorithm: String, digest: [UInt8]) {
        let c = try children(node, path: path, field: "messageImprint")
        guard c.count == 2 else { throw EvidenceError.timestamp(path: path, field: "messageImprint", reason: "expected algorithm and digest") }
        return (try algorithm(c[0], path: path, field: "messageImprint"), Array(try primitive(c[1], path: path, field: "messageImprint")))
    }

    /// An INTEGER's magnitude without leading zero bytes (for comparing serials and nonces).
    static func integerMagnitude(_ node: ASN1Node, path: String, field: String) throws -> [UInt8] {
        guard node.identifier == .integer else { throw EvidenceError.timestamp(path: path, field: field, reason: "expected an INTEGER") }
        return Array(try primitive(node, path: path, field: field).drop { $0 == 0 })
    }
}

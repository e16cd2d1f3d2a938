import Crypto
import Foundation
import SwiftASN1
import X509

/// What a verified RFC 3161 timestamp proves: the file with this SHA-256 existed at `genTime`, said a TSA whose
/// certificate chains to the trusted CA.
public struct TimeStampVerification: Sendable, Codable, Equatable {
    public var genTime: Date
    public var genTimeText: String
    /// Hex SHA-256 of the time-stamped file.
    public var messageImprint: String
    public var serialNumber: String
    public var policy: String
    /// The TSA certificate's subject.
    public var signer: String
    /// Whether a request's nonce was given and matched.
    public var nonceChecked: Bool
}

/// Offline verification of an RFC 3161 TimeStampResp (or a bare TimeStampToken) against a trusted CA certificate.
///
/// Checks, in order, each failure naming its field: PKI status granted; the token is CMS SignedData (RFC 5652) over
/// an id-ct-TSTInfo; exactly one signer; its signed attributes carry content-type id-ct-TSTInfo and a message-digest
/// equal to the hash of the TSTInfo; the signature over the DER of the signed attributes verifies with the public
/// key of the signer certificate found in the token; the TSTInfo's message imprint is the SHA-256 of the file; the
/// nonce equals the request's (when the request is given); the signer certificate chains to the CA (RFC 5280, at
/// genTime) and carries the timeStamping extended key usage; the signed ESS signing-certificate attribute names that
/// certificate.
public enum TimeStampVerifier {
    static let signedData = "1.2.840.113549.1.7.2"
    static let tstInfo = "1.2.840.113549.1.9.16.1.4"
    static let contentTypeAttribute = "1.2.840.113549.1.9.3"
    static let messageDigestAttribute = "1.2.840.113549.1.9.4"
    static let sha256 = "2.16.840.1.101.3.4.2.1"
    static let sha384 = "2.16.840.1.101.3.4.2.2"
    static let sha512 = "2.16.840.1.101.3.4.2.3"
    static let sha1 = "1.3.14.3.2.26"
    static let signingCertificateV1 = "1.2.840.113549.1.9.16.2.12"
    static let signingCertificateV2 = "1.2.840.113549.1.9.16.2.47"

    /// Loads the CA certificates of a PEM file (one or more CERTIFICATE blocks) or a DER certificate.
    public static func loadCertificates(path: String) throws -> [Certificate] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw EvidenceError.unreadable(path: path, reason: "cannot read the CA certificate file (give the TSA's CA certificate, PEM)")
        }
        if let text = String(data: data, encoding: .utf8), text.contains("-----BEGIN") {
            let docs = (try? PEMDocument.parseMultiple(pemString: text)) ?? []
            let certs = docs.filter { $0.discriminator == "CERTIFICATE" }.compactMap { try? Certificate(derEncoded: $0.derBytes) }
            guard !certs.isEmpty else { throw EvidenceError.unreadable(path: path, reason: "no readable CERTIFICATE block in this PEM file") }
            return certs
        }
        guard let cert = try? Certificate(derEncoded: Array(data)) else {
            throw EvidenceError.unreadable(path: path, reason: "neither a PEM nor a DER X.509 certificate")
        }
        return [cert]
    }

    static func digest(_ algorithm: String, _ data: some DataProtocol, path: String, field: String) throws -> [UInt8] {
        switch algorithm {
        case sha256: Array(SHA256.hash(data: data))
        case sha384: Array(SHA384.hash(data: data))
        case sha512: Array(SHA512.hash(data: data))
        default: throw EvidenceError.timestamp(path: path, field: field, reason: "digest algorithm \(algorithm) is not supported (SHA-256/384/512 are)")
        }
    }

    static func signatureAlgorithm(signature: String, digest: String, path: String) throws -> Certificate.SignatureAlgorithm {
        switch (signature, digest) {
        case ("1.2.840.113549.1.1.1", sha256), ("1.2.840.113549.1.1.11", _): return .sha256WithRSAEncryption
        case ("1.2.840.113549.1.1.1", sha384), ("1.2.840.113549.1.1.12", _): return .sha384WithRSAEncryption
        case ("1.2.840.113549.1.1.1", sha512), ("1.2.840.113549.1.1.13", _): return .sha512WithRSAEncryption
        case ("1.2.840.10045.4.3.2", _), ("1.2.840.10045.2.1", sha256): return .ecdsaWithSHA256
        case ("1.2.840.10045.4.3.3", _), ("1.2.840.10045.2.1", sha384): return .ecdsaWithSHA384
        case ("1.2.840.10045.4.3.4", _), ("1.2.840.10045.2.1", sha512): return .ecdsaWithSHA512
        case ("1.3.101.112", _): return .ed25519
        default:
            throw EvidenceError.timestamp(path: path, field: "signatureAlgorithm", reason: "signature algorithm \(signature) with digest \(digest) is not supported (RSA PKCS #1 v1.5, ECDSA and Ed25519 are)")
        }
    }

    static func date(_ t: GeneralizedTime) -> Date? {
        var c = DateComponents()
        c.calendar = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "UTC")
        c.year = t.year; c.month = t.month; c.day = t.day
        c.hour = t.hours; c.minute = t.minutes; c.second = t.seconds
        return c.date.map { $0.addingTimeInterval(t.fractionalSeconds) }
    }

    /// Verifies `response` (the bytes of a .tsr file at `path`) for a file whose SHA-256 is `fileDigest`.
    /// - Parameters:
    ///   - requestNonce: the request's nonce magnitude, checked against the TSTInfo's when given.
    ///   - trustRoots: the TSA's CA certificates.
    /// - Throws: `EvidenceError.timestamp` naming the failing field, `EvidenceError.unreadable` for non-DER input.
    public static func verify(response: [UInt8], path: String, fileDigest: [UInt8], requestNonce: [UInt8]?,
                              trustRoots: [Certificate]) async throws -> TimeStampVerification {
        let root: ASN1Node
        do { root = try BER.parse(response) } catch {
            throw EvidenceError.unreadable(path: path, reason: "not a DER/BER RFC 3161 TimeStampResp or token (\(error))")
        }
        var token = root
        var top = try ASN1Walk.children(root, path: path, field: "TimeStampResp")
        if top.first?.identifier == .sequence {
            // TimeStampResp ::= SEQUENCE { status PKIStatusInfo, timeStampToken TimeStampToken OPTIONAL }
            let statusInfo = try ASN1Walk.children(top[0], path: path, field: "status")
            guard let s = statusInfo.first, let status = try ASN1Walk.integerMagnitude(s, path: path, field: "status").last.map(Int.init) ?? Optional(0) else {
                throw EvidenceError.timestamp(path: path, field: "status", reason: "missing PKIStatus")
            }
            guard status == 0 || status == 1 else {
                throw EvidenceError.timestamp(path: path, field: "status", reason: "the TSA refused the request (PKIStatus \(status); 0 or 1 means granted)")
            }
            guard top.count >= 2 else { throw EvidenceError.timestamp(path: path, field: "timeStampToken", reason: "status granted but no token") }
            token = top[1]
            top = try ASN1Walk.children(token, path: path, field: "timeStampToken")
        }
        // ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT SignedData }
        guard top.count == 2, try ASN1Walk.oid(top[0], path: path, field: "contentType") == signedData else {
            throw EvidenceError.timestamp(path: path, field: "contentType", reason: "the token is not CMS SignedData")
        }
        guard let sdNode = try ASN1Walk.children(top[1], path: path, field: "content").first else {
            throw EvidenceError.timestamp(path: path, field: "content", reason: "empty")
        }
        // SignedData ::= SEQUENCE { version, digestAlgorithms SET, encapContentInfo, [0] certificates, [1] crls, signerInfos SET }
        let sd = try ASN1Walk.children(sdNode, path: path, field: "SignedData")
        guard sd.count >= 4 else { throw EvidenceError.timestamp(path: path, field: "SignedData", reason: "too few fields") }
        let encap = try ASN1Walk.children(sd[2], path: path, field: "encapContentInfo")
        guard encap.count == 2, try ASN1Walk.oid(encap[0], path: path, field: "eContentType") == tstInfo else {
            throw EvidenceError.timestamp(path: path, field: "eContentType", reason: "the signed content is not an id-ct-TSTInfo")
        }
        guard let eContentNode = try ASN1Walk.children(encap[1], path: path, field: "eContent").first else {
            throw EvidenceError.timestamp(path: path, field: "eContent", reason: "empty")
        }
        let tstBytes = Array(try ASN1Walk.primitive(eContentNode, path: path, field: "eContent"))
        var certificates: [Certificate] = []
        var certificateBytes: [[UInt8]] = []
        for node in sd[3..<(sd.count - 1)] where node.identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) {
            for c in try ASN1Walk.children(node, path: path, field: "certificates") where c.identifier == .sequence {
                do {
                    certificates.append(try Certificate(derEncoded: Array(c.encodedBytes)))
                    certificateBytes.append(Array(c.encodedBytes))
                } catch {
                    throw EvidenceError.timestamp(path: path, field: "certificates", reason: "a certificate in the token does not parse (\(error))")
                }
            }
        }
        let signerInfos = try ASN1Walk.children(sd[sd.count - 1], path: path, field: "signerInfos")
        guard signerInfos.count == 1 else {
            throw EvidenceError.timestamp(path: path, field: "signerInfos", reason: "expected exactly one signer, found \(signerInfos.count)")
        }
        // SignerInfo ::= SEQUENCE { version, sid, digestAlgorithm, [0] signedAttrs, signatureAlgorithm, signature, [1] unsigned }
        let si = try ASN1Walk.children(signerInfos[0], path: path, field: "signerInfo")
        guard si.count >= 6, si[3].identifier == ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific) else {
            throw EvidenceError.timestamp(path: path, field: "signedAttrs", reason: "the signer has no signed attributes (RFC 3161 requires them)")
        }
        let digestAlgorithm = try ASN1Walk.algorithm(si[2], path: path, field: "digestAlgorithm")
        let sigAlgorithm = try signatureAlgorithm(signature: try ASN1Walk.algorithm(si[4], path: path, field: "signatureAlgorithm"),
                                                  digest: digestAlgorithm, path: path)
        let signature = Array(try ASN1Walk.primitive(si[5], path: path, field: "signature"))
        var contentType: String?
        var messageDigest: [UInt8]?
        var signingCertificateHash: (algorithm: String, hash: [UInt8])?
        for attr in try ASN1Walk.children(si[3], path: path, field: "signedAttrs") {
            let a = try ASN1Walk.children(attr, path: path, field: "signedAttrs")
            guard a.count == 2, let value = try ASN1Walk.children(a[1], path: path, field: "signedAttrs").first else { continue }
            switch try ASN1Walk.oid(a[0], path: path, field: "signedAttrs") {
            case contentTypeAttribute: contentType = try ASN1Walk.oid(value, path: path, field: "contentTypeAttribute")
            case messageDigestAttribute: messageDigest = Array(try ASN1Walk.primitive(value, path: path, field: "messageDigest"))
            case signingCertificateV2, signingCertificateV1:
                // SigningCertificate(V2) ::= SEQUENCE { certs SEQUENCE OF ESSCertID(v2), … }; the first names the signer.
                // ESSCertIDv2 ::= SEQUENCE { hashAlgorithm DEFAULT sha256, certHash OCTET STRING, … }; ESSCertID: SHA-1.
                let v2 = try ASN1Walk.oid(a[0], path: path, field: "signingCertificate") == signingCertificateV2
                guard let certs = try ASN1Walk.children(value, path: path, field: "signingCertificate").first,
                      let first = try ASN1Walk.children(certs, path: path, field: "signingCertificate").first else { break }
                let id = try ASN1Walk.children(first, path: path, field: "signingCertificate")
                if v2, let head = id.first, head.identifier == .sequence, id.count >= 2 {
                    signingCertificateHash = (try ASN1Walk.algorithm(head, path: path, field: "signingCertificate"),
                                              Array(try ASN1Walk.primitive(id[1], path: path, field: "signingCertificate")))
                } else if let head = id.first {
                    signingCertificateHash = (v2 ? sha256 : sha1, Array(try ASN1Walk.primitive(head, path: path, field: "signingCertificate")))
                }
            default: break
            }
        }
        guard contentType == tstInfo else {
            throw EvidenceError.timestamp(path: path, field: "contentTypeAttribute", reason: "the signed content-type attribute is missing or not id-ct-TSTInfo")
        }
        guard let messageDigest, messageDigest == (try digest(digestAlgorithm, tstBytes, path: path, field: "digestAlgorithm")) else {
            throw EvidenceError.timestamp(path: path, field: "messageDigest", reason: "the signed message-digest attribute is not the hash of the TSTInfo (the token was altered)")
        }
        // The signer: the certificate named by sid (issuer and serial number, or subject key identifier).
        let sid = si[1]
        let signer: Certificate? = try {
            if sid.identifier == .sequence {
                let ias = try ASN1Walk.children(sid, path: path, field: "sid")
                guard ias.count == 2 else { return nil }
                let serial = try ASN1Walk.integerMagnitude(ias[1], path: path, field: "sid")
                let issuer = try? DistinguishedName(derEncoded: ias[0])
                return certificates.first { Array($0.serialNumber.bytes.drop { $0 == 0 }) == serial && $0.issuer == issuer }
            }
            let ski = Array(try ASN1Walk.primitive(sid, path: path, field: "sid"))
            return certificates.first { (try? $0.extensions.subjectKeyIdentifier)??.keyIdentifier.elementsEqual(ski) == true }
        }()
        guard let signer else {
            throw EvidenceError.timestamp(path: path, field: "certificate", reason: "the signer's certificate is not in the token (request it with certReq, as `weightmark timestamp` does)")
        }
        // RFC 3161 §2.4.1 / RFC 5035: the signed ESS signing-certificate attribute pins the signer certificate.
        guard let essHash = signingCertificateHash else {
            throw EvidenceError.timestamp(path: path, field: "signingCertificate", reason: "the signed attributes lack the ESS signing-certificate attribute RFC 3161 requires")
        }
        let signerDER = certificateBytes[certificates.firstIndex(of: signer)!]
        let signerHash: [UInt8] = essHash.algorithm == sha1 ? Array(Insecure.SHA1.hash(data: signerDER))
            : try digest(essHash.algorithm, signerDER, path: path, field: "signingCertificate")
        guard signerHash == essHash.hash else {
            throw EvidenceError.timestamp(path: path, field: "signingCertificate", reason: "the signed signing-certificate hash does not match the signer certificate in the token (substituted certificate)")
        }
        // The signature covers the DER of the signed attributes with their SET tag (RFC 5652 §5.4).
        var signedBytes = Array(si[3].encodedBytes)
        signedBytes[0] = 0x31
        guard signer.publicKey.isValidSignature(signature, for: signedBytes, signatureAlgorithm: sigAlgorithm) else {
            throw EvidenceError.timestamp(path: path, field: "signature", reason: "the TSA's signature does not verify with its certificate's public key (the token was altered)")
        }
        // TSTInfo ::= SEQUENCE { version, policy, messageImprint, serialNumber, genTime, accuracy?, ordering?, nonce?, … }
        let tstRoot: ASN1Node
        do { tstRoot = try DER.parse(tstBytes) } catch {
            throw EvidenceError.timestamp(path: path, field: "TSTInfo", reason: "not DER")
        }
        let tst = try ASN1Walk.children(tstRoot, path: path, field: "TSTInfo")
        guard tst.count >= 5, try ASN1Walk.integerMagnitude(tst[0], path: path, field: "TSTInfo") == [1] else {
            throw EvidenceError.timestamp(path: path, field: "TSTInfo", reason: "not a version 1 TSTInfo")
        }
        let policy = try ASN1Walk.oid(tst[1], path: path, field: "policy")
        let imprint = try ASN1Walk.messageImprint(tst[2], path: path)
        guard imprint.algorithm == sha256, imprint.digest == fileDigest else {
            throw EvidenceError.timestamp(path: path, field: "messageImprint", reason: "the token time-stamps \(imprint.digest.hexString) (\(imprint.algorithm)), not the SHA-256 \(fileDigest.hexString) of this file")
        }
        let serial = try ASN1Walk.integerMagnitude(tst[3], path: path, field: "serialNumber")
        guard let gt = try? GeneralizedTime(derEncoded: tst[4]), let genTime = date(gt) else {
            throw EvidenceError.timestamp(path: path, field: "genTime", reason: "not a GeneralizedTime")
        }
        let tokenNonce = try tst.dropFirst(5).first { $0.identifier == .integer }.map { try ASN1Walk.integerMagnitude($0, path: path, field: "nonce") }
        if let requestNonce {
            guard tokenNonce == Array(requestNonce.drop { $0 == 0 }) else {
                throw EvidenceError.timestamp(path: path, field: "nonce", reason: "the token's nonce \(tokenNonce?.hexString ?? "(none)") is not the request's \(requestNonce.hexString): it answers another request")
            }
        }
        // The signer certificate chains to the CA, valid at genTime, and may sign timestamps.
        var verifier = Verifier(rootCertificates: CertificateStore(trustRoots)) {
            RFC5280Policy(validationTime: genTime)
            TimeStampingPolicy()
        }
        let result = await verifier.validate(leaf: signer, intermediates: CertificateStore(certificates))
        if case let .couldNotValidate(failures) = result {
            let eku = (try? signer.extensions.extendedKeyUsage)??.contains(.timeStamping) == true
            if !eku {
                throw EvidenceError.timestamp(path: path, field: "extendedKeyUsage", reason: "the signer certificate \(signer.subject) lacks the timeStamping extended key usage")
            }
            throw EvidenceError.timestamp(path: path, field: "chain", reason: "the signer certificate \(signer.subject) does not chain to the given CA at \(gt): \(failures.map { String(describing: $0.policyFailureReason) }.joined(separator: "; "))")
        }
        let iso = ISO8601DateFormatter()
        iso.formatOptions = [.withInternetDateTime]
        return TimeStampVerification(genTime: genTime, genTimeText: iso.string(from: genTime), messageImprint: imprint.digest.hexString,
                                     serialNumber: serial.hexString, policy: policy, signer: String(describing: signer.subject),
                                     nonceChecked: requestNonce != nil)
    }
}

/// RFC 3161 §2.3: the TSA's certificate carries the extended key usage id-kp-timeStamping (critical, as the RFC
/// requires; a non-critical one is accepted too). Declaring the extension handled lets a critical EKU through
/// RFC 5280 validation.
struct TimeStampingPolicy: VerifierPolicy {
    let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = [.X509ExtensionID.extendedKeyUsage]

    func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) async -> PolicyEvaluationResult {
        guard let eku = try? chain.leaf.extensions.extendedKeyUsage, eku.contains(.timeStamping) else {
            return .failsToMeetPolicy(reason: "the leaf certificate lacks the timeStamping extended key usage")
        }
        return .meetsPolicy
    }
}

import Foundation
import WeightMarkTestSupport

/// A throw-away RFC 3161 time-stamping authority made with the real `openssl` (installed by scripts/setup-system.sh):
/// a CA, a TSA certificate with the critical timeStamping extended key usage, and `openssl ts -reply` to answer.
struct LocalTSA {
    let dir: String
    var ca: String { dir + "/ca.crt" }

    static var openssl: String {
        for p in ["/usr/bin/openssl", "/usr/local/bin/openssl", "/bin/openssl"] where FileManager.default.isExecutableFile(atPath: p) { return p }
        return "openssl-not-installed (run scripts/setup-system.sh)"
    }

    static func openssl(_ args: [String], in dir: String) throws {
        let r = try Fixtures.runProcess(openssl, args)
        guard r.status == 0 else { throw SetupError(message: "openssl \(args.joined(separator: " ")) failed: \(r.stderr)") }
    }

    /// Makes the CA and the TSA in `dir` (the TSA key is RSA 2048, the CA's EC P-256, as real TSAs mix them).
    init(dir: String, caName: String = "WeightMark Test TSA CA") throws {
        self.dir = dir
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let o = Self.self
        try o.openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", dir + "/ca.key",
                       "-out", dir + "/ca.crt", "-subj", "/CN=\(caName)", "-days", "3650",
                       "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], in: dir)
        try o.openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", dir + "/tsa.key", "-out", dir + "/tsa.csr", "-subj", "/CN=WeightMark Test TSA"], in: dir)
        Fixtures.write(Array("""
        basicConstraints=CA:FALSE
        keyUsage=critical,digitalSignature
        extendedKeyUsage=critical,timeStamping
        subjectKeyIdentifier=hash
        authorityKeyIdentifier=keyid

        """.utf8), to: dir + "/tsa.ext")
        try o.openssl(["x509", "-req", "-in", dir + "/tsa.csr", "-CA", dir + "/ca.crt", "-CAkey", dir + "/ca.key", "-CAcreateserial",
                       "-out", dir + "/tsa.crt", "-days", "3650", "-extfile", dir + "/tsa.ext"], in: dir)
        Fixtures.write(Array("01\n".utf8), to: dir + "/serial")
        Fixtures.write(Array("""
        [ tsa ]
        default_tsa = tsa_config
        [ tsa_config ]
        serial = \(dir)/serial
        crypto_device = builtin
        signer_cert = \(dir)/tsa.crt
        certs = \(dir)/ca.crt
        signer_key = \(dir)/tsa.key
        signer_digest = sha256
        default_policy = 1.3.6.1.4.1.99999.1
        digests = sha256, sha384, sha512
        accuracy = secs:1
        ordering = no
        tsa_name = yes
        ess_cert_id_chain = no
        ess_cert_id_alg = sha256

        """.utf8), to: dir + "/tsa.cnf")
    }

    /// Answers the request file `query` with a TimeStampResp written to `response`.
    func reply(query: String, response: String) throws {
        try Self.openssl(["ts", "-reply", "-config", dir + "/tsa.cnf", "-queryfile", query, "-out", response], in: dir)
    }
}

/// A failed step of a test's setup (a tool that exited non-zero, a file without the expected text).
struct SetupError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

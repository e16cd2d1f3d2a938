import Crypto

enum SHA256Hex {
    static func digest(_ bytes: UnsafeRawBufferPointer) -> String {
        SHA256.hash(data: bytes).map { byte in
            let s = String(byte, radix: 16)
            return byte < 16 ? "0" + s : s
        }.joined()
    }
}

import Foundation
import Testing
import TensorIO
import WeightMarkTestSupport

/// Formats are recognized from their bytes, never their extension; formats WeightMark does not read get one line
/// saying what they are and what WeightMark reads.
@Suite("Format sniffing")
struct FormatSniffingTests {
    static let hdf5: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A] + [UInt8](repeating: 0, count: 56)
    static let onnx: [UInt8] = [0x08, 0x07, 0x12, 0x07] + Array("pytorch".utf8) + [0x1A, 0x03] + Array("2.1".utf8) + [0x3A, 0x00]
    static let tflite: [UInt8] = [0x1C, 0, 0, 0] + Array("TFL3".utf8) + [UInt8](repeating: 0, count: 24)
    static let legacy: [UInt8] = [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E]
    static let barePickle: [UInt8] = [0x80, 0x02, 0x7D, 0x2E] // {}

    @Test("recognized formats WeightMark does not read: exit 2 and one line naming the format and what is read",
          arguments: [("model.safetensors", hdf5, "HDF5"), ("model.gguf", tflite, "TensorFlow Lite"),
                      ("pytorch_model.bin", legacy, "legacy PyTorch checkpoint"), ("weights.npz", barePickle, "bare Python pickle")])
    func unsupported(name: String, bytes: [UInt8], what: String) throws {
        let dir = Fixtures.temporaryDirectory("sniff")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/" + name
        Fixtures.write(bytes, to: path)
        for command in [["inspect", path], ["detect", path, "--key", dir + "/none.key"]] {
            if command[0] == "detect" { _ = try Fixtures.weightmark(["keygen", "--out", dir + "/none.key"]) }
            let r = try Fixtures.weightmark(command)
            #expect(r.status == 2)
            #expect(r.stderr.contains(what), "\(r.stderr)")
            #expect(r.stderr.contains("WeightMark reads safetensors"), "\(r.stderr)")
            #expect(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1)
        }
    }

    @Test("an ONNX model is read (not refused as a format); one without any weights is refused in one line naming ONNX")
    func onnxWithoutWeights() throws {
        let dir = Fixtures.temporaryDirectory("sniff-onnx")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        Fixtures.write(Self.onnx, to: dir + "/model.bin")
        #expect(Self.onnx.withUnsafeBytes { FileFormat.detect(prefix: $0) } == .onnx)
        _ = try Fixtures.weightmark(["keygen", "--out", dir + "/k.key"])
        for command in [["inspect", dir + "/model.bin"], ["detect", dir + "/model.bin", "--key", dir + "/k.key"]] {
            let r = try Fixtures.weightmark(command)
            #expect(r.status == 2 && r.stderr.contains("ONNX") && r.stderr.contains("no initializers"), "\(r.stderr)")
            #expect(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").count == 1)
        }
    }

    @Test("pickles are told from random bytes that start with a PROTO opcode: protocol 2–5 pickles of a dict, list, OrderedDict")
    func pickleSniffing() {
        func format(_ bytes: [UInt8]) -> String {
            bytes.withUnsafeBytes { FileFormat.detect(prefix: $0).name }
        }
        for pickle: [UInt8] in [[0x80, 0x02, 0x7D, 0x71, 0x00, 0x2E], [0x80, 0x04, 0x95, 0x10, 0, 0, 0, 0, 0, 0, 0], [0x80, 0x03, 0x5D, 0x2E],
                                [0x80, 0x02, 0x63] + Array("collections\nOrderedDict\n".utf8), [0x80, 0x05, 0x95, 0x20, 0, 0, 0, 0, 0, 0, 0]] {
            #expect(format(pickle).contains("bare Python pickle"), "\(pickle.prefix(4))")
        }
        // What random bytes beginning 0x80 0x02 look like (1 file in 16,384 of a scan's junk): not a model.
        for third: UInt8 in [0x00, 0x01, 0x2E, 0xFF, 0x41] {
            #expect(!format([0x80, 0x02, third] + [UInt8](repeating: 0x33, count: 61)).contains("pickle"))
        }
    }

    @Test("a TensorFlow SavedModel folder is named as such")
    func savedModel() throws {
        let dir = Fixtures.temporaryDirectory("sniff")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        Fixtures.write([0x08, 0x01], to: dir + "/saved_model.pb")
        let r = try Fixtures.weightmark(["inspect", dir])
        #expect(r.status == 2 && r.stderr.contains("TensorFlow SavedModel"), "\(r.stderr)")
    }

    @Test("the extension does not decide: a safetensors file named .bin and a GGUF named .safetensors open as what they are")
    func extensionIgnored() throws {
        let dir = Fixtures.temporaryDirectory("sniff")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixtures.writeSmallModel(to: dir + "/model.bin")
        #expect(try FileFormat.detect(path: dir + "/model.bin") == .safetensors)
        #expect(try openTensorSource(path: dir + "/model.bin") is SafetensorsModel)
        let gguf: [UInt8] = Array("GGUF".utf8) + [3, 0, 0, 0] + [UInt8](repeating: 0, count: 16)
        Fixtures.write(gguf, to: dir + "/x.safetensors")
        #expect(try FileFormat.detect(path: dir + "/x.safetensors") == .gguf)
        #expect(try FileFormat.detect(path: dir + "/x.safetensors") != .safetensors)
    }

    @Test("ZIP archives are told apart by content: torch.save checkpoint, .npz, Keras 3 archive, other",
          .enabled(if: Fixtures.oraclesAvailable, "Python oracle venv not installed (make venv)"))
    func zips() throws {
        let dir = Fixtures.temporaryDirectory("sniff")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try Fixtures.runPython("""
        import sys, zipfile
        d = sys.argv[1]
        with zipfile.ZipFile(d + '/m.keras', 'w') as z:
            z.writestr('config.json', '{}'); z.writestr('metadata.json', '{}'); z.writestr('model.weights.h5', b'\\x89HDF')
        with zipfile.ZipFile(d + '/other.bin', 'w') as z:
            z.writestr('readme.txt', 'hello')
        """, arguments: [dir])
        var r = try Fixtures.weightmark(["inspect", dir + "/m.keras"])
        #expect(r.status == 2 && r.stderr.contains("Keras 3 .keras archive"), "\(r.stderr)")
        r = try Fixtures.weightmark(["inspect", dir + "/other.bin"])
        #expect(r.status == 2 && r.stderr.contains("neither a torch.save checkpoint nor a NumPy .npz"), "\(r.stderr)")
    }
}

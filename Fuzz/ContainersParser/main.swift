// libFuzzer target: arbitrary bytes through the container readers `inspect` and `detect` use on PyTorch and NumPy
// files — the ZIP central-directory reader, the PyTorch archive layout (data.pkl unpickled by the restricted
// unpickler, storages located), entry contents (stored or inflated, bounded), the unpickler on the raw bytes (a bare
// pickle), and the .npy header parser — plus the error text the CLI would print. Built and run by scripts/fuzz.sh.
import TensorIO

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzContainers(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    do {
        let directory = try ZipDirectory.parse(file: bytes)
        for entry in directory.entries {
            precondition(entry.dataRange.lowerBound >= 0 && entry.dataRange.upperBound <= size, "entry outside the file")
            // Inflating is bounded by the declared size, which the reader checked against the archive.
            if entry.uncompressedSize <= 1 << 20 {
                if let contents = try? ZipArchive.contents(of: entry, in: bytes) { precondition(contents.count == entry.uncompressedSize) }
            }
        }
    } catch {
        precondition(!"\(error)".isEmpty)
    }
    do {
        let layout = try PyTorchArchiveLayout.parse(file: bytes)
        for t in layout.tensors { precondition(t.storage.dataRange.upperBound <= size) }
    } catch {
        precondition(!"\(error)".isEmpty)
    }
    do { _ = try RestrictedUnpickler.unpickle(bytes) } catch { precondition(!"\(error)".isEmpty) }
    do { _ = try NPYHeader.parse(bytes) } catch { precondition(!"\(error)".isEmpty) }
    return 0
}

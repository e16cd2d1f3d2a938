import Foundation

/// Hyperparameters a model ships next to its weights, read without trusting them: a value that is missing, not a
/// positive integer or inconsistent is treated as unknown, never as an error (detection falls back to trying every
/// common value).
public enum ShippedConfig {
    /// The attention head size of the model at `path` (a weights file or its folder): `head_dim`, else hidden size ÷
    /// attention heads from a Hugging Face `config.json` (`hidden_size`/`n_embd`/`d_model` and
    /// `num_attention_heads`/`n_head`/`n_heads`), else `dim` ÷ `n_heads` from Meta's `params.json`. Nil when none
    /// gives an even size from 16 to 1,024.
    public static func attentionHeadSize(near path: String) -> Int? {
        for (file, sizes, heads) in [("config.json", ["hidden_size", "n_embd", "d_model"], ["num_attention_heads", "n_head", "n_heads"]),
                                     ("params.json", ["dim"], ["n_heads"])] {
            // A config, not a weights file renamed: at most 1 MiB.
            guard let found = sidecar(file, near: path), let json = jsonObject(at: found, maximumBytes: 1 << 20) else { continue }
            func integer(_ keys: [String]) -> Int? {
                for k in keys {
                    if let n = json[k] as? NSNumber, let v = Int(exactly: n.doubleValue), v > 0 { return v }
                }
                return nil
            }
            var hd = integer(["head_dim"])
            if hd == nil, let d = integer(sizes), let h = integer(heads), d % h == 0 { hd = d / h }
            if let hd, hd >= 16, hd <= 1024, hd % 2 == 0 { return hd }
        }
        return nil
    }

    /// `file` in the folder of the model at `path` (`path` itself when it is a folder, else the folder holding it);
    /// nil when there is no such file.
    public static func sidecar(_ file: String, near path: String) -> String? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return nil }
        let folder = isDirectory.boolValue ? path : (path as NSString).deletingLastPathComponent
        let found = (folder.isEmpty ? "." : folder) + "/" + file
        return FileManager.default.fileExists(atPath: found) ? found : nil
    }

    /// The JSON object `file` holds; nil when it cannot be read, is larger than `maximumBytes`, or is not a JSON object.
    public static func jsonObject(at file: String, maximumBytes: Int? = nil) -> [String: Any]? {
        if let maximumBytes {
            guard let size = (try? FileManager.default.attributesOfItem(atPath: file))?[.size] as? Int, size <= maximumBytes else { return nil }
        }
        guard let data = FileManager.default.contents(atPath: file) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }
}

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
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return nil }
        let folder = isDirectory.boolValue ? path : (path as NSString).deletingLastPathComponent
        for (file, sizes, heads) in [("config.json", ["hidden_size", "n_embd", "d_model"], ["num_attention_heads", "n_head", "n_heads"]),
                                     ("params.json", ["dim"], ["n_heads"])] {
            let url = URL(fileURLWithPath: (folder.isEmpty ? "." : folder) + "/" + file)
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: url.path),
                  let size = attributes[.size] as? Int, size <= 1 << 20, // a config, not a weights file renamed
                  let data = try? Data(contentsOf: url),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { continue }
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
}

import Foundation

/// JSON read the same way by every reader: a file whose objects repeat a key is refused, because Foundation keeps one
/// of the values and Python's `json` the last, so one file would say two things (a bundle, a report, a key file).
public enum StrictJSON {
    /// The first key that appears twice in one object, with its byte offset; nil when there is none (or when the text
    /// is not JSON at all: the decoder that follows reports that).
    public static func duplicateKey(in data: Data) -> (key: String, offset: Int)? {
        let value: JSONValue? = data.withUnsafeBytes { raw in try? JSONParser.parse(raw) }
        guard let value else { return nil }
        func walk(_ v: JSONValue) -> (String, Int)? {
            switch v {
            case let .object(members):
                var seen = Set<String>()
                for m in members {
                    if !seen.insert(m.key).inserted { return (m.key, m.offset) }
                    if let d = walk(m.value) { return d }
                }
                return nil
            case let .array(items):
                for i in items { if let d = walk(i) { return d } }
                return nil
            default:
                return nil
            }
        }
        return walk(value).map { (key: $0.0, offset: $0.1) }
    }

    /// Decodes `type` from `data` after refusing duplicate keys.
    /// - Throws: `TensorIOError.duplicateJSONKey` naming `path`, or what `JSONDecoder` throws.
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, path: String) throws -> T {
        if let d = duplicateKey(in: data) { throw TensorIOError.duplicateJSONKey(path: path, key: d.key, offset: d.offset) }
        return try JSONDecoder().decode(type, from: data)
    }
}

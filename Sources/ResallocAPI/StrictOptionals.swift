import Foundation

// The API document declares no field nullable: an optional field is either absent or a value.
// The wire types' synthesized decoders call `decodeIfPresent`; these overloads, more specific
// than the standard library's, make an explicit `null` an error instead of "absent", so that
// `{"Pool": null}` is refused like `{"Pool": "x"}`.
extension KeyedDecodingContainer {
    func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? { try strictly(type, key) }
    func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? { try strictly(type, key) }
    func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? { try strictly(type, key) }
    func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? { try strictly(type, key) }

    private func strictly<T: Decodable>(_ type: T.Type, _ key: Key) throws -> T? {
        guard contains(key) else { return nil }
        if try decodeNil(forKey: key) {
            throw DecodingError.valueNotFound(type, .init(codingPath: codingPath + [key], debugDescription: "\(key.stringValue) is null"))
        }
        return try decode(type, forKey: key)
    }
}

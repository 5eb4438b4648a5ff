import Core
import Hummingbird
import ResallocAPI
import Store

/// `GET|POST /key`, `DELETE /key/{name}`: the caller's own SSH public keys, with which the SSH
/// gateway lets them into their leases.
struct KeyController {
    let accounts: Accounts
    let audit: AuditTrail

    var endpoints: [Endpoint] {
        [
            .user(.get, "/key") { _, _, caller in
                try await Body.reply(Payload("Keys", try accounts.keys(of: caller.user).map(Self.info)))
            },
            .user(.post, "/key") { request, context, caller in
                let body = try await Body.decode(KeyRequest.self, from: request, context: context, expecting: "Name and PublicKey")
                let key = try await accounts.addKey(for: caller.user, name: body.name, line: body.publicKey)
                await audit.record(caller.user.name, "key.added", key.name, detail: key.fingerprint, address: context.address)
                return try Body.reply(Payload("Key", Self.info(key), message: "added key \(key.name) (\(key.fingerprint))"), status: .created)
            },
            .user(.delete, "/key/:name") { _, context, caller in
                let name = try context.parameters.require("name")
                try await accounts.removeKey(of: caller.user, name: name)
                await audit.record(caller.user.name, "key.removed", name, address: context.address)
                return try Body.done("removed key \(name)")
            },
        ]
    }

    static func info(_ key: UserKey) -> KeyInfo {
        KeyInfo(name: key.name, algorithm: key.algorithm, fingerprint: key.fingerprint, createdAt: key.createdAt)
    }
}

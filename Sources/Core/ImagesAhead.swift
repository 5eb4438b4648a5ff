import Docker
import Foundation
import Store

extension Master {
    /// Builds the images of `resources` in the background on every healthy machine of
    /// `machines` (all, when nil) that lacks them, at most two builds per machine at once, so
    /// that the first lease or job of a resource on any machine needs no build. Leases that need
    /// an image being built meanwhile wait for that build (`ImageBuilds`), never start another.
    public func buildAhead(_ resources: [Resource], on machines: [Machine]? = nil) {
        let (database, fleet, logger, masterID) = (database, fleet, logger, masterID)
        Task {
            guard !resources.isEmpty, let machines = try? await machines.asyncOr({ try await database.machines() }) else { return }
            await withTaskGroup(of: Void.self) { group in
                for machine in machines where machine.healthy {
                    group.addTask {
                        let docker = fleet.docker(on: machine)
                        var queue = resources[...]
                        await withTaskGroup(of: Void.self) { builds in
                            func next() -> Bool {
                                guard let resource = queue.popFirst() else { return false }
                                builds.addTask {
                                    let tag = ResourceCatalog.imageTag(for: resource)
                                    do {
                                        let built = try await docker.ensureImage(
                                            tag,
                                            dockerfile: Array(resource.dockerfile),
                                            labels: ["resalloc.master": masterID],
                                            cache: fleet.images,
                                            builds: fleet.builds
                                        )
                                        if built {
                                            logger.info("built image ahead of demand", metadata: ["image": "\(tag)", "machine": "\(machine.name)"])
                                        }
                                    } catch {
                                        logger.notice(
                                            "could not build an image ahead of demand",
                                            metadata: ["image": "\(tag)", "machine": "\(machine.name)", "error": "\(error)"]
                                        )
                                    }
                                }
                                return true
                            }
                            for _ in 0..<2 where next() {}
                            while await builds.next() != nil { _ = next() }
                        }
                    }
                }
            }
        }
    }

    /// On how many of the healthy machines this master knows `resource`'s image to be.
    public func machinesWithImage(of resource: Resource, among machines: [Machine]) -> Int {
        let tag = ResourceCatalog.imageTag(for: resource)
        return machines.filter { $0.healthy && fleet.images.has(tag, on: fleet.docker(on: $0).endpoint) }.count
    }
}

extension Optional {
    func asyncOr(_ fallback: () async throws -> Wrapped) async throws -> Wrapped {
        if let self { return self }
        return try await fallback()
    }
}

extension [Machine] {
    /// The same machines, those known to have `image` first (a lease there is no build away),
    /// each part in its own order.
    func preferring(_ image: String, fleet: Fleet) -> [Machine] {
        let has = filter { fleet.images.has(image, on: fleet.docker(on: $0).endpoint) }
        return has + filter { !fleet.images.has(image, on: fleet.docker(on: $0).endpoint) }
    }
}

import Core
import Crypto
import Foundation
import Hummingbird
import Metrics
import Prometheus
import Store
import Synchronization

/// The process's Prometheus registry, behind swift-metrics: bootstrapped once, however many
/// applications a process builds (the tests build many).
enum MetricsRegistry {
    static let shared: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        let buckets: [Duration] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120].map { .milliseconds(Int64($0 * 1000)) }
        factory.defaultDurationHistogramBuckets = buckets
        MetricsSystem.bootstrap(factory)
        return registry
    }()
}

/// `GET /metrics`: the Prometheus text format. Counters and histograms come from where things
/// happen (requests, lease creations, remote commands, sessions); the fleet's state (leases by
/// state and resource, machines, pools) is read from the database at each scrape. Open unless
/// the master was given `--metrics-token`.
final class MetricsController: Sendable {
    let master: Master
    let token: String?
    /// Label sets written before, so that one that vanished reads 0 rather than its last value.
    private let seen = Mutex([String: Set<[String]>]())

    init(master: Master, token: String?) {
        self.master = master
        self.token = token
        _ = MetricsRegistry.shared
    }

    var endpoints: [Endpoint] {
        [
            .open(.get, "/metrics") { [self] request, _ in
                if let token {
                    let given = Endpoint.token(in: request).map { Data(SHA256.hash(data: Data($0.utf8))) }
                    guard given == Data(SHA256.hash(data: Data(token.utf8))) else {
                        throw MasterError(.unauthorized, "/metrics needs the bearer token the master was started with (--metrics-token)")
                    }
                }
                try await refresh()
                var headers = HTTPFields()
                headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
                return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: MetricsRegistry.shared.emitToBuffer())))
            }
        ]
    }

    /// Sets the gauges that describe the fleet now.
    private func refresh() async throws {
        let database = master.database
        let leases = try await database.leaseListings(ownerID: nil, name: nil, machineID: nil)
        let pools = try await master.catalog.resourcesWithReadyPools()
        var byState: [[String]: Int] = [:]
        for state in Lease.State.allCases { for (resource, _) in pools { byState[[state.rawValue, resource.name]] = 0 } }
        for listing in leases { byState[[listing.lease.state.rawValue, listing.resource], default: 0] += 1 }
        set("resalloc_leases", help: "Leases by state and resource.", ["state", "resource"], byState)

        let machines = try await database.machines()
        let slots = try await database.poolSlots(machineID: nil)
        var up: [[String]: Int] = [:]
        var active: [[String]: Int] = [:]
        var capacity: [[String]: Int] = [:]
        var warm: [[String]: Int] = [:]
        for machine in machines {
            up[[machine.name]] = machine.healthy ? 1 : 0
            active[[machine.name]] =
                leases.filter { $0.lease.machineId == machine.id && [.creating, .running, .deleting].contains($0.lease.state) }.count
            capacity[[machine.name]] = machine.capacity
            warm[[machine.name]] = slots.filter { $0.machineId == machine.id }.count
        }
        set("resalloc_machine_up", help: "1 if the machine answered its last health check, 0 if not.", ["machine"], up)
        set("resalloc_machine_active_leases", help: "Leases creating, running or deleting on the machine.", ["machine"], active)
        set("resalloc_machine_capacity", help: "Containers the machine may hold, leases and warm ones together.", ["machine"], capacity)
        set("resalloc_machine_warm_containers", help: "Warm pool containers on the machine.", ["machine"], warm)

        var ready: [[String]: Int] = [:]
        var size: [[String]: Int] = [:]
        for (resource, count) in pools {
            ready[[resource.name]] = count
            size[[resource.name]] = resource.poolSize
        }
        set("resalloc_pool_ready", help: "Warm containers ready to be handed out, by resource.", ["resource"], ready)
        set("resalloc_pool_size", help: "The pool size asked for each resource.", ["resource"], size)
    }

    private func set(_ name: String, help: String, _ labels: [String], _ values: [[String]: Int]) {
        let descriptor = MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
        let stale = seen.withLock { seen in
            defer { seen[name] = Set(values.keys) }
            return seen[name, default: []].subtracting(values.keys)
        }
        for (key, value) in values {
            MetricsRegistry.shared.makeGauge(descriptor: descriptor, labels: Array(zip(labels, key))).set(to: Double(value))
        }
        for key in stale { MetricsRegistry.shared.makeGauge(descriptor: descriptor, labels: Array(zip(labels, key))).set(to: 0) }
    }
}

import Metrics

/// The master's own measurements, through swift-metrics (the server exports them in the
/// Prometheus format). No label ever holds a user's name.
public enum MasterMetrics {
    public enum Served: String, Sendable {
        /// From a warm pool; a cold start on a machine that has the image; one that built it.
        case pool, cold, build
    }

    /// `resalloc_lease_create_seconds{served}`: from the request to a running lease.
    static func leaseCreated(served: Served, since start: ContinuousClock.Instant) {
        Timer(label: "resalloc_lease_create_seconds", dimensions: [("served", served.rawValue)]).record(duration: ContinuousClock.now - start)
    }

    /// `resalloc_sessions_open{kind}`: interactive sessions open now (`shell`: resalloc ssh;
    /// `gateway`: the SSH gateway's sessions).
    public static func sessionOpened(_ kind: String) { Meter(label: "resalloc_sessions_open", dimensions: [("kind", kind)]).increment() }
    public static func sessionClosed(_ kind: String) { Meter(label: "resalloc_sessions_open", dimensions: [("kind", kind)]).decrement() }
}

import ArgumentParser
import NIOCore
import NIOPosix

// Swift Concurrency's tasks run on NIO's event loops, where the HTTP, WebSocket and SSH gateway
// I/O already happens, instead of hopping to the cooperative pool and back for every message (a
// keystroke through `resalloc ssh` crosses such hops four times; BENCH=shell measures it). It must
// come before any task starts, so the entry point is this file rather than `@main`.
_ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
await runCommand()

/// ArgumentParser's asynchronous entry point, from a function that is itself asynchronous so that
/// the asynchronous `main` is the one chosen.
func runCommand() async { await ResallocMaster.main(nil) }

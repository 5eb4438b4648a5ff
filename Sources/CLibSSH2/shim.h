#ifndef RESALLOC_CLIBSSH2_SHIM_H
#define RESALLOC_CLIBSSH2_SHIM_H

#include <libssh2.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/// poll's POLLRDHUP (peer shut down its side), hidden behind _GNU_SOURCE in glibc's headers.
static const short RESALLOC_POLLRDHUP = 0x2000;

/// Names the calling thread as `ps -L` and gdb show it (the kernel keeps 15 bytes). prctl is
/// variadic and pthread_setname_np needs _GNU_SOURCE: neither is callable from Swift as is.
static inline void resalloc_name_thread(const char *name) {
    prctl(PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL);
}

// libssh2's function-like macros are not imported by Swift; these wrap them.

static inline LIBSSH2_CHANNEL *resalloc_channel_open_session(LIBSSH2_SESSION *session) {
    return libssh2_channel_open_session(session);
}

static inline int resalloc_channel_exec(LIBSSH2_CHANNEL *channel, const char *command, unsigned int length) {
    return libssh2_channel_process_startup(channel, "exec", 4, command, length);
}

static inline int resalloc_channel_request_pty(LIBSSH2_CHANNEL *channel, const char *term, unsigned int term_len,
                                               int width, int height) {
    return libssh2_channel_request_pty_ex(channel, term, term_len, NULL, 0, width, height, 0, 0);
}

static inline int resalloc_channel_resize_pty(LIBSSH2_CHANNEL *channel, int width, int height) {
    return libssh2_channel_request_pty_size_ex(channel, width, height, 0, 0);
}

static inline ssize_t resalloc_channel_read(LIBSSH2_CHANNEL *channel, int stream, char *buffer, size_t length) {
    return libssh2_channel_read_ex(channel, stream, buffer, length);
}

static inline ssize_t resalloc_channel_write(LIBSSH2_CHANNEL *channel, const char *buffer, size_t length) {
    return libssh2_channel_write_ex(channel, 0, buffer, length);
}

static inline int resalloc_session_disconnect(LIBSSH2_SESSION *session, const char *description) {
    return libssh2_session_disconnect(session, description);
}

static inline int resalloc_userauth_publickey_fromfile(LIBSSH2_SESSION *session, const char *user,
                                                       unsigned int user_len, const char *private_key,
                                                       const char *passphrase) {
    return libssh2_userauth_publickey_fromfile_ex(session, user, user_len, NULL, private_key, passphrase);
}

static inline LIBSSH2_SESSION *resalloc_session_init(void) {
    return libssh2_session_init_ex(NULL, NULL, NULL, NULL);
}

/// Re-arms TCP_QUICKACK so the peer's next segment is acknowledged at once: sshd does not set
/// TCP_NODELAY for non-interactive sessions, and our delayed ACK would cost ~40 ms per first channel.
static inline void resalloc_quickack(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

static inline void resalloc_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/// A session's socket I/O, through libssh2's send and recv callbacks.
///
/// Reads are counted: a writer on another thread can then tell whether libssh2 took packets off
/// the socket while it wrote (then poll no longer shows them, and the session's own thread must
/// look).
///
/// Sends never come back short. What the kernel does not take at once is kept here, in order,
/// and sent by `resalloc_io_flush` when the socket is writable. libssh2 has a single slot for a
/// packet it could not send whole, and until the call that made it is repeated with the same
/// arguments, every other send on the session fails with LIBSSH2_ERROR_BAD_USE: another
/// channel's input, its end of input, a window change, a channel open. With a full socket (a
/// stream into one container on a slow network) that lost other channels' input. What is kept
/// here is bounded by the channels' SSH windows (libssh2 sends data only within them).
struct resalloc_io {
    long bytes_read;
    /// Kept bytes are pending[pending_start..<pending_end].
    unsigned char *pending;
    size_t pending_start;
    size_t pending_end;
    size_t pending_capacity;
    /// The errno of a send that failed for good; every later send fails with it.
    int send_error;
};

/// Sends what is kept, as far as the socket takes it now. Returns 0, or -errno once the
/// connection has failed.
static inline int resalloc_io_flush(struct resalloc_io *io, int socket) {
    if (io->send_error) return -io->send_error;
    while (io->pending_start < io->pending_end) {
        ssize_t n = send(socket, io->pending + io->pending_start, io->pending_end - io->pending_start, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            io->send_error = errno;
            return -errno;
        }
        io->pending_start += (size_t)n;
    }
    io->pending_start = io->pending_end = 0;
    // A burst (a copy into a lease) grew it; a connection lives long, so give that back.
    if (io->pending_capacity > 1024 * 1024) {
        free(io->pending);
        io->pending = NULL;
        io->pending_capacity = 0;
    }
    return 0;
}

/// Bytes kept, not yet handed to the kernel.
static inline size_t resalloc_io_pending(const struct resalloc_io *io) {
    return io->pending_end - io->pending_start;
}

static ssize_t resalloc_io_send(libssh2_socket_t socket, const void *buffer, size_t length, int flags, void **abstract) {
    struct resalloc_io *io = *abstract;
    int rc = resalloc_io_flush(io, socket);
    if (rc < 0) return rc;
    size_t sent = 0;
    while (resalloc_io_pending(io) == 0 && sent < length) {
        ssize_t n = send(socket, (const unsigned char *)buffer + sent, length - sent, flags);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            io->send_error = errno;
            return -errno;
        }
        sent += (size_t)n;
    }
    if (sent == length) return (ssize_t)length;
    size_t rest = length - sent;
    if (io->pending_end + rest > io->pending_capacity) {
        size_t kept = resalloc_io_pending(io);
        memmove(io->pending, io->pending + io->pending_start, kept);
        io->pending_start = 0;
        io->pending_end = kept;
        if (kept + rest > io->pending_capacity) {
            size_t capacity = io->pending_capacity ? io->pending_capacity : 64 * 1024;
            while (capacity < kept + rest) capacity *= 2;
            unsigned char *grown = realloc(io->pending, capacity);
            if (!grown) return -ENOMEM;
            io->pending = grown;
            io->pending_capacity = capacity;
        }
    }
    memcpy(io->pending + io->pending_end, (const unsigned char *)buffer + sent, rest);
    io->pending_end += rest;
    return (ssize_t)length;
}

static ssize_t resalloc_io_recv(libssh2_socket_t socket, void *buffer, size_t length, int flags, void **abstract) {
    ssize_t n = recv(socket, buffer, length, flags);
    if (n < 0) return (errno == EWOULDBLOCK || errno == EAGAIN) ? -EAGAIN : -errno;
    if (n > 0) ((struct resalloc_io *)*abstract)->bytes_read += n;
    return n;
}

/// Routes the session's socket I/O through `io` from now on.
static inline void resalloc_io_install(LIBSSH2_SESSION *session, struct resalloc_io *io) {
    *libssh2_session_abstract(session) = io;
    libssh2_session_callback_set(session, LIBSSH2_CALLBACK_RECV, (void *)resalloc_io_recv);
    libssh2_session_callback_set(session, LIBSSH2_CALLBACK_SEND, (void *)resalloc_io_send);
}

static inline void resalloc_io_free(struct resalloc_io *io) {
    free(io->pending);
    io->pending = NULL;
    io->pending_start = io->pending_end = io->pending_capacity = 0;
}

#endif

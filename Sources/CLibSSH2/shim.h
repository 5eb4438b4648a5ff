#ifndef RESALLOC_CLIBSSH2_SHIM_H
#define RESALLOC_CLIBSSH2_SHIM_H

#include <libssh2.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <errno.h>

/// poll's POLLRDHUP (peer shut down its side), hidden behind _GNU_SOURCE in glibc's headers.
static const short RESALLOC_POLLRDHUP = 0x2000;

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

/// libssh2's recv, which also adds what it read to the `long` the session's abstract points to:
/// a writer on another thread can then tell whether libssh2 took packets off the socket while
/// it wrote (then poll no longer shows them, and the session's own thread must look).
static ssize_t resalloc_counting_recv(libssh2_socket_t socket, void *buffer, size_t length, int flags, void **abstract) {
    ssize_t n = recv(socket, buffer, length, flags);
    if (n < 0) return (errno == EWOULDBLOCK || errno == EAGAIN) ? -EAGAIN : -errno;
    if (n > 0 && abstract && *abstract) *(long *)*abstract += n;
    return n;
}

static inline void resalloc_count_reads(LIBSSH2_SESSION *session, long *counter) {
    *libssh2_session_abstract(session) = counter;
    libssh2_session_callback_set(session, LIBSSH2_CALLBACK_RECV, (void *)resalloc_counting_recv);
}

#endif

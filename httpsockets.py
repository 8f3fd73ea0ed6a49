"""The sockets under httpserver.py: listening, and sending and receiving without ever
waiting, over plain TCP or over TLS (HTTPS), whose handshake the event loop drives.

httpserver.py decides what to read and send, and when; this module knows how a socket
does it. For plain TCP that is little: ``listen``, ``prepare_client``, ``receive_into`` and
``send_some`` (which return at once, with what the kernel had or took), ``close_writing``.
The rest of this module is TLS, where each of them has a catch.

With TLS_CERT_FILE and TLS_KEY_FILE set, ``python server.py`` speaks HTTPS: HTTP/1.1 inside
TLS (RFC 8446 for TLS 1.3, RFC 5246 for 1.2), with the standard ``ssl`` module (OpenSSL).
A connection begins with a *handshake* before any HTTP byte:

    client                                   server
    ClientHello (versions, ciphers, key share) ->
                          <- ServerHello, certificate, Finished (TLS 1.3: one round trip)
    Finished, then "GET /health HTTP/1.1 ..." ->      (encrypted records from here on)

The handshake runs in the event loop, never in a worker thread: each socket is non-blocking
and wrapped with ``do_handshake_on_connect=False``; the loop calls ``do_handshake()``
whenever the selector says the socket is ready, and OpenSSL answers "I need to read" or "I
need to write" (SSLWantReadError, SSLWantWriteError) until it is done. A client that opens
a TCP connection and never sends its ClientHello, or sends half of one, costs a selector
entry until the head timeout closes it, exactly like a slow request head; it never holds a
worker. ``check_client_hello``, ``start_handshake`` and ``continue_handshake`` are its steps.

Reading and writing through an SSLSocket differ from a plain socket in three ways, each
handled here (receive_into, send_some) or where it happens (httpserver.py):

- "would block" is SSLWantReadError or SSLWantWriteError, not BlockingIOError: WOULD_BLOCK
  names all three. Either may come from a send or a recv: a TLS record read may need a
  write and the other way round (renegotiation, which server_context turns off, is the
  classic case), so both mean "try again later", never "the client is gone".
- OpenSSL decrypts a whole record (up to 16 KiB) at once: plaintext it has decrypted but
  not yet handed over (``pending()``) is invisible to select(), which only sees the kernel's
  bytes. The loop reads until ``pending()`` is 0, or that data would wait for the timeout.
  (Its buffer, httpworkers.RECV_BYTES, holds more than a record, so one read usually
  empties it; a smaller one would depend on this, and a test makes one to see.)
- A send is all or nothing: it returns once all it was given is sent, or raises "would
  block" even when part of the data has already gone out as TLS records, and OpenSSL then
  needs the *same* bytes offered again (ACCEPT_MOVING_WRITE_BUFFER, which Python sets, lets
  them move in memory). One send of a 1 MiB response would look like 0 bytes sent until the
  last one went, and a slow reader would seem to take nothing at all: ``send_some`` sends a
  record's worth at a time, so that what went is counted and only one record waits to be
  offered again (from the front of the outbox, which is only ever appended to).
  ``sendfile`` would bypass TLS: the server never uses it.

A plain HTTP request sent to the TLS port is answered in plain HTTP: 400, "this port speaks
HTTPS" (nginx does the same), rather than a TLS alert no person can read. Every TLS record
starts with its content type, 22 (0x16) for a handshake; no HTTP method starts with that
byte, so the first byte, peeked at before wrapping, tells them apart.
"""
import selectors
import socket
import ssl

LISTEN_BACKLOG = 1024                  # connections the kernel queues while the server is full

MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2
# TLS 1.2 cipher suites (TLS 1.3 has its own five, all AEAD, which this does not change):
# Mozilla's "intermediate" profile without its finite-field DHE. ECDHE gives forward secrecy
# (a key stolen later does not decrypt traffic recorded now); AES-GCM and ChaCha20-Poly1305
# are AEAD ciphers, so no CBC padding oracles (Lucky 13, POODLE) and no RC4 or 3DES.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
TLS_SEND_BYTES = 16 * 1024  # plaintext per send over TLS: one record's worth (RFC 8446 §5.1)
ALPN_PROTOCOLS = ["http/1.1"]  # what this server speaks: a client offering h2 falls back to it
TLS_HANDSHAKE_RECORD = b"\x16"  # the first byte of a ClientHello (RFC 8446 §5.1 ContentType)
PLAIN_HTTP_DETAIL = "this port speaks HTTPS; the request was plain HTTP (use https://)"

# What a non-blocking send or recv raises when it cannot go on right now, on a plain socket
# (BlockingIOError) or a TLS one (the other two).
WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def listen(host, port) -> socket.socket:
    """A non-blocking socket listening on (host, port); port 0 picks a free port. Raises
    OSError when the port is taken or the address is not this machine's."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        # Restart at once after a crash instead of waiting out TIME_WAIT on the port.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(LISTEN_BACKLOG)
    except OSError:
        listener.close()
        raise
    listener.setblocking(False)
    return listener


def prepare_client(sock, send_buffer_bytes=None) -> None:
    """Set up an accepted client's socket: no Nagle delay, the send buffer, non-blocking."""
    # Without this, a response written in two pieces waits for the client's delayed
    # ACK (Nagle's algorithm): keep-alive falls from thousands of requests/s to hundreds.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if send_buffer_bytes is not None:  # less kernel memory per slow reader
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
    sock.setblocking(False)


def receive_into(sock, buffer) -> int | None:
    """recv() what has arrived into buffer, without waiting: the count (0: the client closed
    or reset the connection), or None when nothing has arrived after all."""
    try:
        return sock.recv_into(buffer)
    except WOULD_BLOCK:
        return None
    except OSError:
        return 0


def close_writing(sock) -> None:
    """Send our FIN, and keep reading what the client still sends (httpserver's goodbye).
    Over TLS the close_notify alert goes first (send_close_notify)."""
    send_close_notify(sock)
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:  # already closed by the client
        pass


class NotTLS(Exception):
    """The client's first byte is not a TLS handshake: probably plain HTTP on the TLS port."""


def server_context(cert_file, key_file) -> ssl.SSLContext:
    """An SSLContext for serving HTTPS with the certificate chain in cert_file (PEM, the
    server's certificate first, then its intermediates) and its private key in key_file.

    Raises ssl.SSLError (or OSError) when the files do not hold a certificate and its key.

    create_default_context(Purpose.CLIENT_AUTH) is the standard library's server profile:
    no compression (CRIME), a fresh ECDH key per handshake, the server's cipher order, and no
    client certificate asked for. On top of it, stated here rather than left to the
    defaults of the Python or OpenSSL build: TLS 1.2 at least (1.0 and 1.1 are deprecated by
    RFC 8996), TLS12_CIPHERS, no renegotiation (a client that renegotiates again and again
    costs the server a handshake each time, and a read in the middle of a send), and ALPN.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = MIN_TLS_VERSION
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    context.load_cert_chain(cert_file, key_file)
    return context


def check_client_hello(sock) -> None:
    """Look at the first byte of an accepted socket, which select() says has arrived,
    without taking it (OpenSSL reads it next). Returns when it starts a TLS handshake.
    Raises NotTLS when the client spoke something else; ConnectionResetError when the client
    closed without a byte (or BlockingIOError: nothing came after all, and it is closed)."""
    first = sock.recv(1, socket.MSG_PEEK)
    if not first:
        raise ConnectionResetError("the client closed before its handshake")
    if first != TLS_HANDSHAKE_RECORD:
        raise NotTLS(PLAIN_HTTP_DETAIL)


def start_handshake(sock, context) -> ssl.SSLSocket:
    """The TLS socket over a non-blocking accepted one, not handshaking yet (the loop calls
    continue_handshake). sock is detached, its file descriptor now the returned socket's."""
    return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)


def continue_handshake(sock) -> int | None:
    """Take the handshake as far as the bytes at hand allow: None once it is complete, or
    what to wait for before calling again: selectors.EVENT_READ or EVENT_WRITE. Raises
    ssl.SSLError (no common version or cipher, a malformed message) or OSError (the client
    went away)."""
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return selectors.EVENT_READ
    except ssl.SSLWantWriteError:
        return selectors.EVENT_WRITE
    return None


def send_some(sock, data) -> int:
    """Send what the socket takes now, without waiting: how many bytes of data that was
    (0 when it takes none). Raises OSError when the client is gone. Over TLS, a record's
    worth at a time (see the module docstring)."""
    if not isinstance(sock, ssl.SSLSocket):
        try:
            return sock.send(data)
        except BlockingIOError:
            return 0
    sent = 0
    with memoryview(data) as view:  # released before the caller resizes data (an outbox)
        try:
            while sent < len(view):
                sent += sock.send(view[sent:sent + TLS_SEND_BYTES])
        except WOULD_BLOCK:
            pass
    return sent


def pending_plaintext(sock) -> int:
    """Bytes OpenSSL has decrypted and not handed over yet: select() cannot see them."""
    return sock.pending() if isinstance(sock, ssl.SSLSocket) else 0


def send_close_notify(sock) -> None:
    """Tell a TLS client that this is the end of the data (the close_notify alert), before
    the TCP close: without it, a body delimited by the close (HTTP/1.0) could be cut short
    by an attacker undetected (RFC 8446 §6.1). Non-blocking and best effort: it does not
    wait for the client's own close_notify."""
    if not isinstance(sock, ssl.SSLSocket):
        return
    try:
        sock.unwrap()  # sends ours; then raises SSLWantReadError while it waits for theirs
    except (ValueError, OSError):  # want-read/write, the client gone, or no handshake yet
        pass

"""A TCP proxy for tests that can be paused: a database link that stops answering.

    with TCPProxy(("127.0.0.1", 5432)) as proxy:     # listens on 127.0.0.1:<free port>
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        proxy.pause()     # bytes stop flowing, both ways; every socket stays open
        proxy.resume()    # what waited is forwarded, and the link works again

A paused proxy is what a frozen server, a stuck NAT box or a half-dead link looks like to a
client: the connection is not refused and not reset, the proxy's kernel still acknowledges
every byte sent to it, and no answer ever comes. Nothing in TCP itself notices (keepalive
probes and unacknowledged data are both answered), so only a deadline kept by the client
ends the wait. That is the point of pausing rather than closing.

While paused the proxy still accepts new connections and dials the server for them, as a
stuck process's listening socket would (the kernel completes the handshake), but forwards
nothing on them either.
"""

import contextlib
import selectors
import socket
import threading

CHUNK_BYTES = 65536
POLL_SECONDS = 0.05  # how often an idle forwarding thread looks at the pause flag and `close`


class TCPProxy:
    """Forward every connection to `upstream` (host, port), one thread per direction."""

    def __init__(self, upstream):
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._flowing = threading.Event()  # set: bytes are forwarded; clear: paused
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets = []
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True)]
        self._lock = threading.Lock()

    def __enter__(self):
        self._threads[0].start()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def pause(self):
        """Stop forwarding, in both directions, without closing anything."""
        self._flowing.clear()

    def resume(self):
        """Forward again, starting with whatever arrived while paused."""
        self._flowing.set()

    def close(self):
        """Stop every thread and close every socket."""
        self._closed.set()
        self._flowing.set()  # wakes the threads that wait for it
        self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(5)
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept_loop(self):
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while not self._closed.is_set():
                if not selector.select(POLL_SECONDS):
                    continue
                try:
                    client, _ = self._listener.accept()
                except OSError:  # closed under us by close()
                    return
                self._connect(client)

    def _connect(self, client):
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        pumps = [threading.Thread(target=self._pump, args=(client, server), daemon=True),
                 threading.Thread(target=self._pump, args=(server, client), daemon=True)]
        with self._lock:
            self._sockets += [client, server]
            self._threads += pumps
        for pump in pumps:
            pump.start()

    def _pump(self, source, target):
        """Copy bytes from `source` to `target` while flowing; pass on an end of stream."""
        with selectors.DefaultSelector() as selector:
            selector.register(source, selectors.EVENT_READ)
            while not self._closed.is_set():
                # Paused: read nothing, so the bytes wait in the kernel's buffers, acknowledged.
                if not self._flowing.wait(POLL_SECONDS) or not selector.select(POLL_SECONDS):
                    continue
                try:
                    chunk = source.recv(CHUNK_BYTES)
                except OSError:
                    chunk = b""
                # A chunk read just as pause() was called waits for resume() too.
                while not self._flowing.wait(POLL_SECONDS):
                    pass
                try:
                    if not chunk:
                        target.shutdown(socket.SHUT_WR)  # the end of stream goes on, too
                        return
                    target.sendall(chunk)
                except OSError:  # the other side is gone: so is this direction
                    with contextlib.suppress(OSError):
                        source.shutdown(socket.SHUT_RD)
                    return

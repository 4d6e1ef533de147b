"""A TCP forwarder a test can cut and restore, to take a server away from one client only.

Stopping a shared server (PostgreSQL, Redis) would break every other test using it at the same
time; pointing the code under test at a proxy of its own breaks only that code's connections::

    from tests.tcp_proxy import TcpProxy

    with TcpProxy(("127.0.0.1", 5432)) as proxy:     # listens on 127.0.0.1:<free port>
        url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/mydb"
        ...                                          # traffic flows to the target
        proxy.cut()      # resets every forwarded connection and closes the port: a new
                         # connection is refused, as by a server that is down
        ...
        proxy.restore()  # listens on the same port again: new connections reach the target
        ...

API:

- ``TcpProxy(target, host="127.0.0.1", port=0)``: ``target`` is a ``(host, port)`` pair;
  ``port=0`` picks a free port. Nothing listens until :meth:`start` (or ``with``).
- ``start()`` -> the proxy; ``stop()`` closes everything (also on leaving ``with``).
- ``cut()`` / ``restore()``: take the target away and give it back; both idempotent.
- ``host``, ``port``, ``address``: where clients connect; ``connections``: how many forwarded
  connections are open now; ``is_cut``: whether it is cut.

Forwarding runs in daemon threads (one accept loop, two pumps per connection), so a test that
forgets to stop the proxy does not hang the run.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

_BUFFER = 64 * 1024
# How often the accept loop looks whether it should stop: closing a listening socket does not
# wake a thread blocked in accept() on Linux.
_ACCEPT_POLL_SECONDS = 0.05


class TcpProxy:
    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1", port: int = 0) -> None:
        self.target = target
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._accepter: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self._pairs = 0
        self._cut = True

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def connections(self) -> int:
        with self._lock:
            return self._pairs

    @property
    def is_cut(self) -> bool:
        return self._cut

    def start(self) -> TcpProxy:
        self.restore()
        return self

    def restore(self) -> None:
        with self._lock:
            if not self._cut:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # The port may hold connections in TIME_WAIT from before the cut.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(128)
            listener.settimeout(_ACCEPT_POLL_SECONDS)
            self.port = listener.getsockname()[1]
            self._listener = listener
            self._cut = False
            self._accepter = threading.Thread(
                target=self._accept, args=(listener,), name=f"tcp-proxy-{self.port}", daemon=True
            )
            self._accepter.start()

    def cut(self) -> None:
        with self._lock:
            if self._cut:
                return
            self._cut = True
            listener, self._listener = self._listener, None
            accepter, self._accepter = self._accepter, None
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _reset(sock)
        if accepter is not None:
            accepter.join()
        if listener is not None:
            listener.close()

    def stop(self) -> None:
        self.cut()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def _accept(self, listener: socket.socket) -> None:
        while not self._cut:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)  # the target itself is unreachable: so is the proxy
                continue
            with self._lock:
                if self._cut:
                    _reset(client)
                    _reset(upstream)
                    return
                self._sockets.update((client, upstream))
                self._pairs += 1
            done = threading.Barrier(2, action=lambda c=client, u=upstream: self._close(c, u))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(source, sink, done), name="tcp-proxy-pump", daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, done: threading.Barrier) -> None:
        try:
            while data := source.recv(_BUFFER):
                sink.sendall(data)
        except OSError:
            pass
        # One side is finished: finish the other too (wakes its pump), then close both once.
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(threading.BrokenBarrierError):
            done.wait()

    def _close(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self._pairs -= 1
            self._sockets.difference_update((client, upstream))
        client.close()
        upstream.close()


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset, as a server that went away does to its peers."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass

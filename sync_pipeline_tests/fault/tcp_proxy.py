"""A small TCP proxy on 127.0.0.1 that can add latency and cut every connection (a lost database)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `cut()` resets all connections and refuses new ones."""

    def __init__(self, target_host: str, target_port: int, latency_seconds: float = 0.0) -> None:
        self._target = (target_host, target_port)
        self._latency = latency_seconds
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._open = True
        self._stopped = False
        self._thread = threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True)

    @property
    def port(self) -> int:
        """The port clients connect to."""
        return int(self._listener.getsockname()[1])

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped = True
        self.cut()
        self._thread.join()
        self._listener.close()

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until `restore()`."""
        with self._lock:
            self._open = False
            for conn in self._connections:
                try:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.close()
                except OSError:
                    pass
            self._connections.clear()

    def restore(self) -> None:
        """Accept connections again."""
        with self._lock:
            self._open = True

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                if not self._open:
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection(self._target, timeout=5)
                except OSError:
                    client.close()
                    continue
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if self._latency:
                    time.sleep(self._latency)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()

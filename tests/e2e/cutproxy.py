"""A TCP proxy on 127.0.0.1 that cuts uploads: the first ``cuts`` connections are
reset after ``after`` bytes went from the client to the server.

``tests/support/faultproxy.py`` injects faults into *responses* (fail a request,
drop after K response bytes); a node push is one long *request*, so cutting it
mid-archive needs the other direction.
"""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType


class CutProxy:
    def __init__(self, target_port: int, *, after: int, cuts: int = 1) -> None:
        self.target_port = target_port
        self.after = after
        self.cuts = cuts
        self.connections = 0
        self.cut = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> CutProxy:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting and close every connection still open."""
        self._closed = True
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                budget = self.after if self.cut < self.cuts else None
                if budget is not None:
                    self.cut += 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(
                target=self._pipe, args=(client, upstream, budget), daemon=True
            ).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, budget: int | None) -> None:
        try:
            while data := src.recv(65536):
                if budget is not None:
                    data = data[:budget]
                    budget -= len(data)
                dst.sendall(data)
                if budget == 0:
                    for sock in (src, dst):  # cut both sides, as a broken link would
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        sock.shutdown(socket.SHUT_RDWR)  # also wakes the other direction's recv
                        sock.close()
                    return
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for sock in (src, dst):
                sock.close()

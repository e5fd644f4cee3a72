"""When a request reached the sandbox: the kernel's receive time of its first segment.

Kommo counts requests on its own machines; the sandbox counts them on ours. A stamp taken in
the handler thread tells when Python got round to the request, and on a loaded machine that
thread is scheduled late: requests that reached the socket a spacing apart get stamped together
and look like a client bunching them. The kernel stamps each received segment itself
(``SO_TIMESTAMPNS``, Linux), so the sandbox peeks at the first byte of each request and reads
the stamp of the segment carrying it, before the request is read. Where there is no stamp
(another OS, the option refused, a request already read along with the one before) the caller
falls back to its own clock.
"""

from __future__ import annotations

import io
import socket
import struct
import sys

# The option and its control message share one number: 35 in Linux's asm-generic (x86-64, arm64),
# where Python's socket module may not name it.
SO_TIMESTAMPNS: int | None = getattr(
    socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None
)
# struct timespec: seconds and nanoseconds, two C longs.
_TIMESPEC = struct.Struct("@ll")
_CMSG_SPACE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0


def enable_kernel_stamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp what `sock` receives; False where it cannot."""
    if SO_TIMESTAMPNS is None or not _CMSG_SPACE:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return bool(sock.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS))
    except OSError:
        return False


def kernel_arrival(sock: socket.socket) -> float | None:
    """Unix time at which the first unread byte of `sock` reached the host, or None.

    Waits for that byte (as reading the request would) without consuming it. None when the
    peer closed, or the kernel attached no stamp. Raises TimeoutError after the socket's
    timeout, like a read.
    """
    data, ancillary, _flags, _addr = sock.recvmsg(1, _CMSG_SPACE, socket.MSG_PEEK)
    if not data:
        return None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = _TIMESPEC.unpack(payload[: _TIMESPEC.size])
            return seconds + nanoseconds * 1e-9
    return None


class CountingReader(io.RawIOBase):
    """A connection's raw reader that counts the bytes it handed on.

    Under a buffered reader, ``delivered - buffered.tell()`` is what the buffer holds unread:
    when that is zero, the next request's first byte is still in the kernel, where its stamp
    can be read.
    """

    def __init__(self, raw: io.RawIOBase) -> None:
        super().__init__()
        self._raw = raw
        self.delivered = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int | None:  # type: ignore[override]
        n = self._raw.readinto(buffer)
        if n:
            self.delivered += n
        return n

    def tell(self) -> int:
        return self.delivered

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()

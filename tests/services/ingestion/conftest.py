"""Hostile inputs for ingestion, made here: decompression bombs, a server that drips its reply,
and an ingestion service that may read chosen local folders."""

from __future__ import annotations

import http.server
import socketserver
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import grpc
import pytest

from services.common.grpc_runtime import GrpcServer
from services.common.store import ClipStore
from services.ingestion.server import IngestionServicer
from services.ingestion.sources import IngestSettings

BOMB_SIDE = 16000
# The drip: a few bytes each quarter second, for at most a minute.
_DRIP = b"x" * 64
_DRIP_EVERY_S = 0.25
_DRIPS = 240

Reading = Callable[..., grpc.Channel]


@pytest.fixture()
def reading(start_stage: Callable[..., GrpcServer], engine_store: ClipStore) -> Iterator[Reading]:
    """``reading(*roots)``: a channel to an ingestion service on the engine's store that may
    read the local files under ``roots``."""
    opened: list[grpc.Channel] = []

    def open_channel(*roots: Path) -> grpc.Channel:
        servicer = IngestionServicer(IngestSettings(allowed_roots=list(roots)), engine_store)
        server = start_stage("ingestion", engine_store, servicer=servicer)
        opened.append(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
        return opened[-1]

    yield open_channel
    for channel in opened:
        channel.close()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


@pytest.fixture(scope="session")
def image_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 16000x16000 grey PNG of about 250 KB named ``.mp4``: 256 MB once decoded.

    Compressed row by row, so making it never holds the pixels either.
    """
    compressor = zlib.compressobj(9)
    row = bytes(BOMB_SIDE + 1)  # a filter byte, then black pixels
    pixels = b"".join(compressor.compress(row) for _ in range(BOMB_SIDE)) + compressor.flush()
    header = struct.pack(">IIBBBBB", BOMB_SIDE, BOMB_SIDE, 8, 0, 0, 0, 0)
    path = tmp_path_factory.mktemp("bombs") / "image.mp4"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="session")
def mov_bomb(image_bomb: Path) -> Path:
    """A real QuickTime/MP4 container whose one video track claims 16000x16000 frames (the PNG
    above as its single packet, muxed without decoding or encoding anything)."""
    path = image_bomb.with_name("track.mp4")
    with av.open(str(path), mode="w", format="mov") as output:
        stream = output.add_stream("png", rate=25)
        stream.width = stream.height = BOMB_SIDE
        stream.pix_fmt = "gray"
        packet = av.Packet(image_bomb.read_bytes())
        packet.stream = stream
        packet.pts = packet.dts = 0
        packet.time_base = Fraction(1, 25)
        output.mux(packet)
    return path


class _DripHandler(http.server.BaseHTTPRequestHandler):
    """``/body``: headers at once, then the body a few bytes at a time; ``/headers``: the status
    line, then the headers a few bytes at a time. Either stops when the client goes away."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        try:
            if self.path == "/body":
                self.send_response(200)
                self.send_header("Content-Length", str(len(_DRIP) * _DRIPS))
                self.end_headers()
            else:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            for _ in range(_DRIPS):
                self.wfile.write(_DRIP)
                self.wfile.flush()
                time.sleep(_DRIP_EVERY_S)
        except OSError:
            pass  # the client hung up: what the test wants


@pytest.fixture(scope="session")
def drip_base() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a server that drips its replies (see ``_DripHandler``)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _DripHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()

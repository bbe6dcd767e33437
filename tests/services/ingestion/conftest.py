"""Bad inputs made from real media, and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import av
import numpy as np
import pytest

from services.common.video import write_clip


def _audio_only(path: Path) -> None:
    # A valid mp4 holding one second of AAC and no video stream.
    with av.open(str(path), mode="w", format="mp4") as output:
        stream = output.add_stream("aac", rate=16000)
        stream.layout = "mono"
        tone = np.sin(np.linspace(0, 440 * 2 * np.pi, 16000, dtype=np.float32))[None, :]
        for start in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(tone[:, start : start + 1024], "fltp", "mono")
            frame.sample_rate = 16000
            frame.pts = start
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode():
            output.mux(packet)


@pytest.fixture(scope="session")
def media(
    tmp_path_factory: pytest.TempPathFactory, bikes: Path, carphone: Path, bigbuckbunny: Path
) -> Path:
    """A folder of good and bad videos: the good ones by hashtag folder, the bad under ``bad``."""
    root = tmp_path_factory.mktemp("media")
    for hashtag, source in (("cycling", bikes), ("talking", carphone), ("cartoon", bigbuckbunny)):
        (root / hashtag).mkdir()
        shutil.copy(source, root / hashtag / source.name)
    bad = root / "bad"
    bad.mkdir()
    (bad / "zero.mp4").write_bytes(b"")
    data = carphone.read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (bad / "text.mp4").write_text("not a video, only text\n" * 50)
    _audio_only(bad / "audio.mp4")
    write_clip(carphone, bad / "oneframe.mp4", 0, 1, short_side=144)
    return root


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/redirect/"):
            # Send the client to the loopback address itself: a private target.
            target = self.path.removeprefix("/redirect")
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}{target}")
            self.end_headers()
            return
        super().do_GET()


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # The size-limit test hangs up mid-body on purpose; any other error is reported.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="session")
def http_base(media: Path) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving ``media``; ``/redirect/X`` answers 302 to ``/X``."""
    server = _Server(("127.0.0.1", 0), partial(_Handler, directory=str(media)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

"""Hostile inputs of the security review, built small and seeded (shared by unit and serve
tests). Each is what an attacker could upload; none is a real video someone would publish."""

from __future__ import annotations

import io

import av
import numpy as np

FFCONCAT = b"ffconcat version 1.0\nfile 'pyproject.toml'\nfile '/etc/passwd'\n"
HLS = (
    b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n"
    b"#EXTINF:10,\nhttp://169.254.169.254/latest/meta-data/\n#EXT-X-ENDLIST\n"
)


def million_frame_mp4(n: int = 1_000_000, fps: int = 25, size: int = 16) -> bytes:
    """A real H.264 MP4 of ``n`` tiny frames (one coded skip frame muxed n times): ~16 bytes a
    frame, so 1M frames fit in an upload cap of 64 MiB."""

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"bframes": "0", "keyint": str(10 * n)}
        pkts = []
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((size, size, 3), np.uint8), "rgb24")
            frame.pts = i
            pkts += list(s.encode(frame))
        pkts += list(s.encode())
        first, skip = pkts[0], bytes(pkts[-1])
        tb = first.time_base  # (muxing rescales the packet in place)
        step = int(round(1 / (fps * tb)))
        out.mux(first)
        for i in range(1, n):
            p = av.Packet(skip)
            p.stream, p.time_base = s, tb
            p.pts = p.dts = i * step
            out.mux(p)
    return buf.getvalue()


def huge_vp8_webm(side: int = 16383) -> bytes:
    """A WebM whose VP8 key frame (and container) says side x side pixels (16k x 16k: ~800 MB
    a frame once decoded); the bitstream itself is a tiny 256 x 256 clip's."""

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="webm") as out:
        s = out.add_stream("libvpx", rate=1)
        s.width = s.height = 256
        s.pix_fmt = "yuv420p"
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((256, 256, 3), np.uint8), "rgb24")
            frame.pts = i
            for pkt in s.encode(frame):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    data = buf.getvalue()
    k = data.find(b"\x9d\x01\x2a")  # VP8 key frame start code, then width, height (LE, 14 bits)
    dim = side.to_bytes(2, "little")
    data = data[: k + 3] + dim + dim + data[k + 7 :]
    ebml = side.to_bytes(2, "big")
    return data.replace(b"\xb0\x82\x01\x00", b"\xb0\x82" + ebml).replace(
        b"\xba\x82\x01\x00", b"\xba\x82" + ebml
    )

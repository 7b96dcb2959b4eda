"""Blurring a video frame by frame: every frame is detected, and each frame's boxes are also
blurred on the next few frames (``carry``), so a face missed in one frame stays blurred."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from mlsd.blurring.blur import BlurConfig, blur
from mlsd.blurring.pipeline import Detections
from mlsd.video import CONTAINERS, VideoError, container_of


def blur_video(
    src: str | Path,
    dst: str | Path,
    detect: Callable[[np.ndarray], Detections],
    cfg: BlurConfig | None = None,
    carry: int = 3,
    max_frames: int = 100_000,
) -> dict:
    """Decode ``src`` (PyAV, containers by magic bytes as in mlsd.video), blur, re-encode to
    H.264 ``dst``; returns counts. Audio is dropped (it is not blurred)."""

    with open(src, "rb") as f:
        kind = container_of(f.read(64))
    if kind is None:
        raise VideoError("not_a_video", "not an MP4/QuickTime, Matroska/WebM or AVI file")
    recent: deque[Detections] = deque(maxlen=carry + 1)
    frames = boxes = 0
    fmt = CONTAINERS[kind]  # the demuxer named, never probed
    with av.open(str(src), format=fmt) as inp, av.open(str(dst), mode="w") as out:
        s_in = inp.streams.video[0]
        rate = s_in.average_rate or 25
        s_out = out.add_stream("libx264", rate=rate)
        s_out.width, s_out.height = (
            s_in.codec_context.width // 2 * 2,
            s_in.codec_context.height // 2 * 2,
        )
        s_out.pix_fmt = "yuv420p"
        for frame in inp.decode(s_in):
            frames += 1
            if frames > max_frames:
                raise VideoError("too_costly", f"over {max_frames} frames")
            img = frame.to_ndarray(format="rgb24")[: s_out.height, : s_out.width]
            det = detect(img)
            boxes += len(det)
            recent.append(det)
            union = Detections.concat(list(recent))
            vf = av.VideoFrame.from_ndarray(blur(img, union, cfg), format="rgb24")
            for pkt in s_out.encode(vf):
                out.mux(pkt)
        for pkt in s_out.encode():
            out.mux(pkt)
    return {"frames": frames, "boxes": boxes}

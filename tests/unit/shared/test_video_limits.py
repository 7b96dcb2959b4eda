"""The video decoder accepts a short allow-list and bounds what one decode may cost."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mlsd.video import SampleConfig, VideoError, container_of, decode_sampled, write_mp4
from tests.attacks import FFCONCAT, HLS, huge_vp8_webm, million_frame_mp4


def _reason(data, cfg=None) -> str:
    with pytest.raises(VideoError) as e:
        decode_sampled(data, cfg or SampleConfig())
    return e.value.reason


def test_scripts_and_playlists_are_never_handed_to_ffmpeg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ffconcat names files relative to the working directory
    (tmp_path / "pyproject.toml").write_bytes(b"secret")
    for body in (FFCONCAT, HLS, b"\x89PNG\r\n\x1a\n" + b"\0" * 64, b"GIF89a" + b"\0" * 64):
        assert container_of(body[:64]) is None
        assert _reason(body) == "not_a_video"


def test_a_million_frame_clip_is_refused_from_its_header():
    data = million_frame_mp4()
    assert len(data) < 64 * 1024 * 1024
    t0 = time.perf_counter()
    assert _reason(data, SampleConfig(max_duration_s=1800.0)) in {"too_long", "too_costly"}
    assert _reason(data, SampleConfig(max_duration_s=1e9)) == "too_costly"  # declared frames
    assert time.perf_counter() - t0 < 30  # refused from the header: no decode happened


def test_decoded_frames_and_wall_time_are_capped_whatever_the_header_says():
    data = million_frame_mp4(n=3000)  # 120 s at 25 fps: within every header cap below
    ok = decode_sampled(data, SampleConfig(fps=0.1, size=16, max_decoded_frames=10_000))
    assert len(ok.frames) == 12
    assert _reason(data, SampleConfig(fps=0.1, size=16, max_decoded_frames=2000)) == "too_costly"
    cfg = SampleConfig(fps=0.1, size=16, max_decode_s=0.0)  # the wall-clock budget
    assert _reason(data, cfg) == "too_costly"


def test_a_16k_video_is_refused_before_any_frame_is_decoded():
    data = huge_vp8_webm()
    t0 = time.perf_counter()
    assert _reason(data) == "too_large"
    assert time.perf_counter() - t0 < 10


def test_real_clips_still_decode(tmp_path):
    rng = np.random.default_rng(0)
    frames = [(rng.random((64, 64, 3)) * 255).astype(np.uint8) for _ in range(30)]
    path = write_mp4(tmp_path / "a.mp4", frames, fps=10)
    v = decode_sampled(path.read_bytes(), SampleConfig(fps=2.0, size=32))
    assert v.frames.shape[1:] == (32, 32, 3) and len(v.frames) >= 5

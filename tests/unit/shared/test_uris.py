"""URIs judged by structure: the prefix escapes a raw startswith admitted are refused."""

import pytest

from mlsd.uris import UnsafeURI, parse_uri, uri_allowed

PREFIXES = ["s3://bucket/videos/", "file:///srv/allowed", "/data/uploads"]


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket/videos/a.mp4",
        "s3://bucket/videos/sub/b.mp4",
        "file:///srv/allowed/clip.mp4",
        "/srv/allowed/clip.mp4",  # a plain absolute path is a file URI
        "/data/uploads/x.mp4",
        "file://localhost/data/uploads/x.mp4",
    ],
)
def test_allowed(uri):
    assert uri_allowed(uri, PREFIXES)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://bucket-evil/videos/a.mp4",  # another bucket that shares the prefix's letters
        "s3://bucket/videos2/a.mp4",  # a sibling folder
        "s3://bucket/other/a.mp4",
        "gs://bucket/videos/a.mp4",  # another scheme
        "file:///srv/allowedX/clip.mp4",
        "/etc/passwd",
    ],
)
def test_not_under_a_prefix(uri):
    assert not uri_allowed(uri, PREFIXES)


@pytest.mark.parametrize(
    "uri",
    [
        "file:///srv/allowed/../x",  # leaves the folder: checked and refused
        "/srv/allowed/../../etc/passwd",
        "/srv/allowed/./clip.mp4",
        "/srv/allowed//clip.mp4",
        "s3://bucket/videos/%2e%2e/secret",
        "s3://bucket/videos/a.mp4?versionId=1",
        "s3://bucket/videos/a.mp4#frag",
        "file://otherhost/srv/allowed/x",
        "s3://bucket/videos/a\\b",
        "s3::bucket/videos/a",
        "relative/path.mp4",
        "",
        "s3://bucket/videos/a\x00.mp4",
        "s3://bucket/" + "a/" * 2000,
    ],
)
def test_ambiguous_or_malformed_is_refused(uri):
    with pytest.raises(UnsafeURI):
        uri_allowed(uri, PREFIXES)


def test_a_broken_configured_prefix_admits_nothing():
    assert not uri_allowed("/srv/x/a.mp4", ["/srv/x/../", "relative"])
    assert parse_uri("S3://b/k").scheme == "s3"

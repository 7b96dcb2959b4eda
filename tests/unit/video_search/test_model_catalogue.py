"""Text-video model (zero-init residual heads, the book's contrastive loss), the synthetic clip
sampler, the video catalogue's durable log, and the reranking rules."""

import numpy as np
import pytest
import torch

from mlsd.data.synthetic_clips import FRAMES_PER_CLIP, ClipSampler, all_captions
from mlsd.data.wordnet import WordNetMissing, WordNetNouns
from mlsd.state import LIVE_ID_BASE
from mlsd.video_search.catalogue import VideoDoc, VideoLog, signature
from mlsd.video_search.fusion import Fused
from mlsd.video_search.model import VideoTextConfig, VideoTextModel, class_names
from mlsd.video_search.rerank import VideoRerankConfig, rerank_videos


def _model(seed=0, dims=(16, 8, 5)):
    feat, text, classes = dims
    g = torch.Generator().manual_seed(seed)
    class_text = torch.nn.functional.normalize(torch.randn(classes, text, generator=g), dim=-1)
    cfg = VideoTextConfig(feat_dim=feat, text_dim=text, n_classes=classes)
    return VideoTextModel(cfg, class_text.numpy())


def test_untrained_model_is_exactly_zero_shot():
    m = _model()
    probs = torch.softmax(torch.randn(4, 5), -1)
    v = m.embed_video(torch.randn(4, 16), probs)
    assert torch.allclose(v, m.zero_shot(probs), atol=1e-6)
    t = torch.randn(3, 8)
    assert torch.allclose(m.embed_text(t), torch.nn.functional.normalize(t, dim=-1), atol=1e-6)


def test_contrastive_loss_learns_to_pair():
    torch.manual_seed(0)
    m = _model()
    feats = torch.randn(32, 16)
    probs = torch.softmax(torch.randn(32, 5), -1)
    text = feats[:, :8] + 0.1 * torch.randn(32, 8)  # captions that depend on the video
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = float(m.loss(feats, probs, text))
    for _ in range(200):
        loss = m.loss(feats, probs, text)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first
    sims = m.embed_text(text) @ m.embed_video(feats, probs).T
    assert (sims.argmax(1) == torch.arange(32)).float().mean() > 0.8


def test_clip_sampler_captions_match_frames():
    labels = np.repeat(np.arange(10), 20)
    s = ClipSampler(labels, seed=0)
    frames, caps = s.sample(50)
    captions = all_captions()
    assert frames.shape == (50, FRAMES_PER_CLIP) and len(set(captions)) == len(captions)
    for f, c in zip(frames, caps, strict=True):
        kinds = set(labels[f].tolist())
        assert 1 <= len(kinds) <= 2
        assert (" and " in captions[c]) == (len(kinds) == 2)


def test_video_log_is_durable_and_replayed(state_url):
    log = VideoLog(state_url)
    vid = log.append(VideoDoc(0, title="a"), np.ones(4), np.full(3, 0.5))
    log.close()
    again = VideoLog(state_url)
    ((seq, doc, feat, prob),) = again.since(0)
    assert vid == again.live_id(seq) == doc.video_id and vid > LIVE_ID_BASE and doc.title == "a"
    assert feat.tolist() == [1.0] * 4 and prob.tolist() == [0.5] * 3
    assert again.since(seq) == []


def test_rerank_rules():
    f = np.random.default_rng(0).normal(size=32)
    docs = {
        1: VideoDoc(1, "a", signature=signature(f)),
        2: VideoDoc(2, "a copy", signature=signature(f + 1e-3)),  # near-duplicate of 1
        3: VideoDoc(3, "private", private=True),
        4: VideoDoc(4, "blocked", blocked=True),
        5: VideoDoc(5, "gone", available=False),
        6: VideoDoc(6, "new", published=1_000_000.0, signature=signature(-f)),
    }
    fused = [Fused(i, 1.0 - i / 10, {"text": i}) for i in (1, 2, 3, 4, 5, 6, 7)]
    kept = rerank_videos(fused, docs, 10, now=1_000_000.0)
    assert [d.video_id for _, d in kept] == [1, 6]  # 7 is unknown, 2-5 dropped
    boosted = rerank_videos(fused, docs, 1, 1_000_000.0, VideoRerankConfig(freshness_boost=1.0))
    assert boosted[0][1].video_id == 6
    nodedup = rerank_videos(fused, docs, 10, 0.0, VideoRerankConfig(dedup_bits=-1))
    assert [d.video_id for _, d in nodedup] == [1, 2, 6]


def test_class_names_have_imagenet_synonyms_and_wordnet_hypernyms():

    names = class_names()
    assert len(names) == 1000 and names[0][:2] == ["tench", "Tinca tinca"]
    try:
        wn = WordNetNouns()
    except WordNetMissing:
        pytest.skip("WordNet database not installed (apt-get install wordnet-base)")
    with wn:
        assert wn.synset(4557648).words == ("water bottle",)  # ImageNet's n04557648
        assert wn.hypernym_names(4557648) == ["bottle"]
        with pytest.raises(KeyError):
            wn.synset(4557649)  # not the start of a data line
    assert names[898] == ["water bottle", "bottle"]
    assert all(len(n) == len(set(n)) for n in names)


def test_class_temperature_softens_the_zero_shot_mixture():

    class_text = np.eye(1000, 384, dtype=np.float32)
    probs = torch.softmax(torch.randn(2, 1000) * 4, -1)
    sharp = VideoTextModel(VideoTextConfig(), class_text).zero_shot(probs)
    soft = VideoTextModel(VideoTextConfig(class_temperature=2.0), class_text).zero_shot(probs)
    ref = torch.nn.functional.normalize(probs @ torch.as_tensor(class_text), dim=-1)
    assert torch.allclose(sharp, ref)  # T = 1: the first zero-shot model, unchanged
    w = (probs.sqrt() / probs.sqrt().sum(-1, keepdim=True)) @ torch.as_tensor(class_text)
    assert torch.allclose(soft, torch.nn.functional.normalize(w, dim=-1), atol=1e-6)

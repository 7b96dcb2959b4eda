import numpy as np
import pytest
import torch

from mlsd.visual_search.contrastive import PairMaker, PositiveSampler, nearest_neighbours


def test_positive_sampler_modes():
    labels = np.array([0, 0, 1, 1, 2, 2])
    nn = np.array([[1], [0], [3], [2], [5], [4]])
    a = np.arange(6)
    assert (PositiveSampler("self", 6)(a) == a).all()
    lab = PositiveSampler("labels", 6, labels=labels)(a)
    assert (labels[lab] == labels).all()
    nb = PositiveSampler("neighbours", 6, neighbours=nn, neighbour_prob=1.0)(a)
    assert (nb == nn[:, 0]).all()
    clicks = PositiveSampler("clicks", 6, clicks=np.array([[0, 5]]))(a)
    assert clicks[0] == 5 and clicks[5] == 0 and (clicks[1:5] == a[1:5]).all()
    with pytest.raises(ValueError):
        PositiveSampler("labels", 6)
    with pytest.raises(ValueError):
        PositiveSampler("clicks", 6, clicks=np.zeros((0, 2)))


def test_nearest_neighbours_excludes_self():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 20)).astype(np.float32)
    x[1] = x[0] * 2  # same direction as 0
    nn = nearest_neighbours(x, 3, pca_dim=0)
    assert nn.shape == (50, 3)
    assert (nn != np.arange(50)[:, None]).all()
    assert nn[0, 0] == 1


def test_pair_maker_batched_and_torchvision():
    imgs = torch.rand(10, 1, 28, 28)
    s = PositiveSampler("self", 10)
    for mode in ("batched", "torchvision"):
        v1, v2, g = PairMaker(imgs, s, augment=mode)(np.arange(4))
        assert v1.shape == (4, 1, 28, 28) and v2.shape == v1.shape and g is None
        # two independent augmentations of each image: the views differ, pixels stay valid
        assert not torch.equal(v1, v2) and not torch.equal(v1, imgs[:4])
        assert v1.min() >= 0 and v1.max() <= 1
    with pytest.raises(ValueError):
        PairMaker(imgs, s, augment="nope")


class _Unaugmented(PairMaker):
    """The pairing alone: views are the images themselves."""

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_pairs_are_the_anchor_and_its_sampled_positive():
    """Each row pairs the anchor image with the positive its sampler chose: the same image
    (self), an image of the same label (labels), the clicked partner (clicks)."""
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    imgs = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 1, 4, 4) / 8
    anchors = np.arange(8)
    v1, v2, _ = _Unaugmented(imgs, PositiveSampler("self", 8))(anchors)
    assert torch.equal(v1, imgs) and torch.equal(v2, imgs)
    v1, v2, _ = _Unaugmented(imgs, PositiveSampler("labels", 8, labels=labels))(anchors)
    partner = (v2[:, 0, 0, 0] * 8).round().long().numpy()
    assert torch.equal(v1, imgs) and (labels[partner] == labels).all()
    assert (partner != anchors).any()  # other images of the label, not only itself
    clicks = PositiveSampler("clicks", 8, clicks=np.array([[2, 7]]))
    _, v2, _ = _Unaugmented(imgs, clicks)(np.array([2, 7, 3]))
    assert (v2[:, 0, 0, 0] * 8).round().long().tolist() == [7, 2, 3]

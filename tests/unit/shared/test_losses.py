import pytest
import torch
import torch.nn.functional as F

from mlsd.losses import info_nce, nt_xent


def _reference_nt_xent(z1, z2, t):
    """SimCLR's definition written out loop by loop."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z)
    b = n // 2
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        sims = torch.stack([z[i] @ z[m] / t for m in range(n) if m != i])
        pos = z[i] @ z[j] / t
        total += -(pos - torch.logsumexp(sims, 0))
    return total / n


def test_nt_xent_matches_definition():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    assert nt_xent(z1, z2, 0.3).item() == pytest.approx(
        _reference_nt_xent(z1, z2, 0.3).item(), rel=1e-5
    )


def test_supervised_form_with_unique_groups_equals_plain():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    plain = nt_xent(z1, z2, 0.2)
    sup = nt_xent(z1, z2, 0.2, same_group=torch.arange(5))
    assert sup.item() == pytest.approx(plain.item(), rel=1e-5)


def test_losses_prefer_aligned_pairs():
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(2))
    assert nt_xent(z, z, 0.1) < nt_xent(z, z.roll(1, 0), 0.1)
    assert info_nce(z, z) < info_nce(z, z.roll(1, 0))
    with pytest.raises(ValueError):
        nt_xent(z, z[:4])

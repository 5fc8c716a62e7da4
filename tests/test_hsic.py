"""Normalised HSIC / linear CKA: known answers and invariances."""

import pytest
import torch

from infoprune.estimators.hsic import centred, centred_gram, gram, nhsic_from_grams, normalised_hsic

KERNELS = ["linear", "rbf"]


def features(n: int = 64, d: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def random_orthogonal(d: int, seed: int = 1) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_representation_with_itself_scores_one(kernel):
    x = features()
    assert normalised_hsic(x, x, kernel) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_independent_representations_score_near_zero(kernel):
    n = 500
    x, y = features(n, 10, seed=0), features(n, 10, seed=1)
    # Under independence the statistic is O(1/n); a dependent pair scores far higher.
    assert normalised_hsic(x, y, kernel) < 0.05
    assert normalised_hsic(x, x[:, :5] + y[:, :5], kernel) > 0.3


@pytest.mark.parametrize("kernel", KERNELS)
def test_invariant_to_orthogonal_transforms_and_isotropic_scaling(kernel):
    x, y = features(), features(seed=3)[:, :7] + features()[:, :7]
    reference = normalised_hsic(x, y, kernel)
    transformed = 3.7 * x @ random_orthogonal(x.shape[1])
    assert normalised_hsic(transformed, y, kernel) == pytest.approx(reference, rel=1e-9)
    assert normalised_hsic(x, 0.01 * y, kernel) == pytest.approx(reference, rel=1e-9)


def test_linear_kernel_matches_the_feature_space_formula_of_linear_cka():
    # Linear CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on centred features (Kornblith et al., 2019, Eq. 5).
    x, y = features(30, 200), features(30, 50, seed=5)
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert normalised_hsic(x, y) == pytest.approx(float(expected), rel=1e-10)


def test_gram_form_accepts_conv_maps_and_centring_is_h_k_h():
    maps = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    k = gram(maps)
    assert k.shape == (8, 8)
    h = torch.eye(8, dtype=torch.float64) - 1 / 8
    torch.testing.assert_close(centred(k), h @ k @ h)


def test_rbf_kernel_uses_the_median_distance_bandwidth():
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)
    # Pairwise squared distances 1, 9, 4: median 4, so K_ab = exp(-d²/8).
    expected = torch.exp(-torch.tensor([[0, 1, 9], [1, 0, 4], [9, 4, 0]], dtype=torch.float64) / 8)
    torch.testing.assert_close(gram(x, "rbf"), expected)


def test_matrix_form_is_symmetric_with_unit_diagonal():
    grams = [centred_gram(features(seed=s)[:, : 3 + s]) for s in range(4)]
    s = nhsic_from_grams(grams)
    torch.testing.assert_close(s, s.T)
    torch.testing.assert_close(s.diagonal(), torch.ones(4, dtype=torch.float64))
    assert float(s[0, 1]) == pytest.approx(normalised_hsic(features(seed=0)[:, :3], features(seed=1)[:, :4]))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="constant"):
        centred_gram(torch.ones(10, 4))
    with pytest.raises(ValueError, match="same samples"):
        normalised_hsic(features(10), features(11))
    with pytest.raises(ValueError, match="Unknown kernel"):
        gram(features(), "cosine")
    with pytest.raises(ValueError, match="n ≥ 2"):
        gram(torch.ones(1, 3))

"""Every PLACE loss against a naive per-sample loop reference written here, values and gradients."""

import math

import torch
import torch.nn.functional as F

from modeling_place.loss_place import (
    correlation_loss,
    correlation_target,
    ita_loss,
    observation_diversity,
    observation_similarity,
    pcma_loss,
)

TAU_MATCH, TAU_PCMA = 0.1, 0.1


def _unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1).float().requires_grad_(True)


# -- naive references ------------------------------------------------------------------------------------
def naive_ita(img, txt, scale):
    total = 0.0
    n = img.shape[0]
    for i in range(n):
        row = torch.stack([scale * img[i] @ txt[j] for j in range(n)])
        col = torch.stack([scale * txt[i] @ img[j] for j in range(n)])
        total = total - torch.log_softmax(row, 0)[i] / (2 * n) - torch.log_softmax(col, 0)[i] / (2 * n)
    return total


def naive_s(t, obs_i):
    sims = torch.stack([t @ obs_i[m] for m in range(obs_i.shape[0])])
    weights = torch.softmax(sims / TAU_MATCH, 0)
    return sum(weights[m] * sims[m] for m in range(obs_i.shape[0]))


def naive_positive(j, k, i, hashes, mask):
    if i == j:
        return True
    h = int(hashes[j, k])
    return h != 0 and any(bool(mask[i, q]) and int(hashes[i, q]) == h for q in range(hashes.shape[1]))


def naive_pcma(sent, mask, hashes, obs):
    b, k_max = mask.shape
    valid = [(j, k) for j in range(b) for k in range(k_max) if mask[j, k]]
    score = {(j, k, i): naive_s(sent[j, k], obs[i]) / TAU_PCMA for (j, k) in valid for i in range(b)}
    s2i = 0.0
    for j, k in valid:
        all_ = torch.stack([score[j, k, i] for i in range(b)])
        pos = torch.stack([score[j, k, i] for i in range(b) if naive_positive(j, k, i, hashes, mask)])
        s2i = s2i - (torch.logsumexp(pos, 0) - torch.logsumexp(all_, 0)) / len(valid)
    i2s, images = 0.0, 0
    for i in range(b):
        column = torch.stack([score[j, k, i] for j, k in valid])
        log_p = torch.log_softmax(column, 0)
        pos = [n for n, (j, k) in enumerate(valid) if naive_positive(j, k, i, hashes, mask)]
        if pos:
            i2s = i2s - sum(log_p[n] for n in pos) / len(pos)
            images += 1
    return (s2i + i2s / images) / 2


def naive_correlation_target(pixels, patch):
    gray = pixels.mean(1)
    b, h, w = gray.shape
    out = torch.zeros(b, (h // patch) * (w // patch), (h // patch) * (w // patch))
    for n in range(b):
        vecs = []
        for r in range(h // patch):
            for c in range(w // patch):
                v = gray[n, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch].flatten()
                v = v - v.mean()
                vecs.append(v / (v.pow(2).mean().sqrt() + 1e-6))
        for a, va in enumerate(vecs):
            for c, vc in enumerate(vecs):
                out[n, a, c] = (va * vc).mean()
    return out


# -- tests -----------------------------------------------------------------------------------------------
def test_ita_matches_loop_reference_and_gradient():
    img, txt = _unit(6, 8), _unit(6, 8)
    scale = torch.tensor(14.0)
    fast = ita_loss(img, txt, img, txt, scale)
    img_ref, txt_ref = img.detach().clone().requires_grad_(True), txt.detach().clone().requires_grad_(True)
    slow = naive_ita(img_ref, txt_ref, scale)
    torch.testing.assert_close(fast, slow)
    fast.backward()
    slow.backward()
    torch.testing.assert_close(img.grad, img_ref.grad)
    torch.testing.assert_close(txt.grad, txt_ref.grad)


def _pcma_inputs(b=5, k=4, m=3, d=8):
    sent, obs = _unit(b, k, d), _unit(b, m, d)
    mask = torch.rand(b, k) > 0.3
    mask[:, 0] = True
    mask[2] = False  # an image whose report has no sentence at all
    hashes = torch.randint(1, 4, (b, k)) * mask  # few distinct hashes → many duplicates
    return sent, mask, hashes, obs


def test_pcma_matches_loop_reference_and_gradient():
    sent, mask, hashes, obs = _pcma_inputs()
    fast = pcma_loss(sent, mask, hashes, obs, sent, mask, hashes, obs, TAU_MATCH, TAU_PCMA)
    sent_ref, obs_ref = sent.detach().clone().requires_grad_(True), obs.detach().clone().requires_grad_(True)
    slow = naive_pcma(sent_ref, mask, hashes, obs_ref)
    torch.testing.assert_close(fast, slow)
    fast.backward()
    slow.backward()
    torch.testing.assert_close(sent.grad, sent_ref.grad)
    torch.testing.assert_close(obs.grad, obs_ref.grad)


def test_pcma_duplicate_hash_makes_other_image_a_positive():
    """Two reports sharing "No pneumothorax." must not push each other's images away."""
    eye = torch.eye(4)
    # Both images show the shared finding e2; image 0 also shows e0, image 1 also e1. Reports say the same.
    obs = torch.stack([eye[[0, 2]], eye[[1, 2]]])
    sent = torch.stack([eye[[0, 2]], eye[[1, 2]]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    distinct = torch.tensor([[11, 12], [21, 22]])
    shared = torch.tensor([[11, 99], [21, 99]])  # slot 1 is the same sentence in both reports
    args = (TAU_MATCH, TAU_PCMA)
    loss_distinct = pcma_loss(sent, mask, distinct, obs, sent, mask, distinct, obs, *args)
    loss_shared = pcma_loss(sent, mask, shared, obs, sent, mask, shared, obs, *args)
    # Without hashes, report 0's e2 sentence is pushed away from image 1, which it truly describes.
    assert loss_shared < loss_distinct
    torch.testing.assert_close(loss_shared, naive_pcma(sent, mask, shared, obs))


def test_pcma_without_hashes_uses_own_image_only():
    sent, mask, _, obs = _pcma_inputs()
    zeros = torch.zeros_like(mask, dtype=torch.long)
    loss_none = pcma_loss(sent, mask, None, obs, sent, mask, None, obs, TAU_MATCH, TAU_PCMA)
    torch.testing.assert_close(loss_none, naive_pcma(sent, mask, zeros, obs))


def test_observation_similarity_hard_is_max():
    sent, obs = _unit(3, 8), _unit(2, 5, 8)
    hard = observation_similarity(sent, obs, TAU_MATCH, "hard")
    torch.testing.assert_close(hard, torch.einsum("sd,bmd->sbm", sent, obs).amax(-1))
    soft = observation_similarity(sent, obs, TAU_MATCH, "soft")
    assert torch.all(soft <= hard + 1e-6)


def test_observation_diversity_matches_loop_and_spans_zero_to_one():
    torch.manual_seed(0)
    v = F.normalize(torch.randn(3, 4, 8), dim=-1)
    expected = sum(float(v[b, i] @ v[b, j]) ** 2 for b in range(3) for i in range(4) for j in range(4) if i != j) / 36
    assert math.isclose(observation_diversity(v).item(), expected, rel_tol=1e-5)
    assert observation_diversity(torch.eye(4).expand(2, 4, 4)).item() == 0.0  # orthogonal observations
    assert math.isclose(observation_diversity(v[:, :1].expand(3, 4, 8)).item(), 1.0, rel_tol=1e-5)  # collapsed

def test_correlation_target_matches_loop_and_is_pearson():
    pixels = torch.rand(2, 3, 16, 16)
    pixels[1, :, :8, :8] = 0.5  # a flat patch: eps guard gives a zero row, not NaN
    fast = correlation_target(pixels, patch_size=8)
    torch.testing.assert_close(fast, naive_correlation_target(pixels, 8), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(fast).all()
    diag = torch.diagonal(fast[0])
    torch.testing.assert_close(diag, torch.ones_like(diag), atol=1e-4, rtol=0)


def test_correlation_loss_matches_loop_reference_and_gradient():
    z = torch.randn(2, 5, 4, requires_grad=True)
    target = torch.rand(2, 5, 5) * 2 - 1
    fast = correlation_loss(z, target)
    z_ref = z.detach().clone().requires_grad_(True)
    zn = F.normalize(z_ref, dim=-1)
    terms = [(zn[b, i] @ zn[b, j] - target[b, i, j]) ** 2 for b in range(2) for i in range(5) for j in range(5) if i != j]
    slow = sum(terms) / len(terms)
    torch.testing.assert_close(fast, slow)
    fast.backward()
    slow.backward()
    torch.testing.assert_close(z.grad, z_ref.grad)


def test_losses_stay_fp32_under_bf16_inputs():
    img, txt = _unit(4, 8), _unit(4, 8)
    loss = ita_loss(img.bfloat16(), txt.bfloat16(), img.bfloat16(), txt.bfloat16(), torch.tensor(10.0))
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())

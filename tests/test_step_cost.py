"""Exact rewrites that make the training step cheaper: they must give the same numbers as the plain computation."""

from __future__ import annotations

import pytest
import torch

from modeling_place import PlaceConfig, PlaceModel
from tests.helpers import micro_config


def _expanded_reference(extractor, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VPOE as written in docs/METHOD.md, section 5: the queries copied for every image before layer 1."""
    patches = extractor.patch_norm(patches)
    queries = extractor.queries.unsqueeze(0).expand(patches.shape[0], -1, -1).contiguous()
    positions = None
    if extractor.key_positions:
        from modeling_place.modeling_place import sincos_positions_2d

        positions = sincos_positions_2d(*patches.shape[1:])
    weights = None
    for index, layer in enumerate(extractor.layers):
        queries, weights = layer(queries, patches, index == len(extractor.layers) - 1, positions)
    projected = torch.nn.functional.normalize(extractor.projection(extractor.final_norm(queries)), dim=-1)
    return projected, weights


@pytest.mark.parametrize("key_positions", ["none", "sincos"])
def test_vpoe_shared_first_layer_queries_equal_per_image_queries(key_positions):
    config = PlaceConfig(**micro_config(num_queries=6, vpoe_layers=2, vpoe_key_positions=key_positions))
    extractor = PlaceModel(config).observation_extractor.float()
    patches = torch.randn(5, 16, 48, requires_grad=True)
    observations, maps = extractor(patches)
    grads = torch.autograd.grad((observations * torch.arange(6.0)[:, None]).sum() + maps.pow(2).sum(),
                                [patches, extractor.queries, extractor.layers[0].self_attn.q_proj.weight])
    reference, reference_maps = _expanded_reference(extractor, patches)
    reference_grads = torch.autograd.grad(
        (reference * torch.arange(6.0)[:, None]).sum() + reference_maps.pow(2).sum(),
        [patches, extractor.queries, extractor.layers[0].self_attn.q_proj.weight])
    assert observations.shape == (5, 6, 16) and maps.shape == (5, 6, 16)
    torch.testing.assert_close(observations, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps, reference_maps, rtol=1e-5, atol=1e-6)
    for grad, expected in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(observations[0], observations[1])  # the images still differ after the shared start


@pytest.mark.parametrize("matching", ["soft", "hard"])
def test_losses_have_no_data_dependent_shapes(matching):
    """No boolean indexing, nonzero or .item() in the losses: on a GPU none of them waits for the device, and
    torch.compile traces them whole. Fake tensors carry no data, so such an operation raises here."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from modeling_place.loss_place import correlation_loss, ita_loss, pcma_loss

    with FakeTensorMode():
        sentences = torch.nn.functional.normalize(torch.randn(4, 5, 8), dim=-1).requires_grad_()
        observations = torch.nn.functional.normalize(torch.randn(4, 3, 8), dim=-1).requires_grad_()
        mask = torch.rand(4, 5) > 0.3
        hashes = torch.randint(0, 4, (4, 5))
        loss = pcma_loss(sentences, mask, hashes, observations, sentences, mask, hashes, observations, 0.1, 0.1,
                         matching)
        loss = loss + correlation_loss(torch.randn(4, 6, 5, requires_grad=True), torch.randn(4, 6, 6))
        images = torch.randn(4, 8, requires_grad=True)
        loss = loss + ita_loss(images, images, images, images, torch.tensor(10.0))
        loss.backward()
    assert loss.shape == ()

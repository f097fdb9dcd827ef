"""The CPU fp32 trainer clips and clears gradients with torch instead of DeepSpeed's
per-parameter Python loops (engine/backends/deepspeed_trainer.py,
use_torch_clip_and_zero_grad). DeepSpeed's clip (deepspeed.runtime.utils.clip_grad_norm_, which
needs a process group to run) scales every gradient by max_norm / (norm + 1e-6) when the global
2-norm is above max_norm and leaves them alone otherwise: the same must come out here."""

import types

import pytest
import torch

from engine.backends.deepspeed_trainer import use_torch_clip_and_zero_grad


def model_with_gradients(scale: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    model[0].bias.requires_grad_(False)  # a frozen parameter (LoRA's base) gets no gradient
    (model(torch.randn(4, 8)).sum() * scale).backward()
    return model


@pytest.mark.parametrize("scale", [1e-3, 1e3])  # below the clip (untouched) and above it
def test_gradients_are_clipped_as_deepspeed_does_and_cleared(scale):
    model = model_with_gradients(scale)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.grad.clone() for p in params]
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in before]))
    factor = min(1.0, 2.0 / (float(norm) + 1e-6))
    engine = types.SimpleNamespace(gradient_clipping=lambda: 2.0, zero_grad=pytest.fail,
                                   clip_fp32_gradients=pytest.fail)  # DeepSpeed's, replaced
    use_torch_clip_and_zero_grad(engine, params)

    engine.clip_fp32_gradients()
    for grad, param in zip(before, params):
        torch.testing.assert_close(param.grad, grad * factor)
    assert (factor == 1.0) == (scale < 1)  # one case below max_norm, one clipped
    assert model[0].bias.grad is None
    engine.zero_grad()
    assert all(p.grad is None for p in model.parameters())

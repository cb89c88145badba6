"""The fast path is exact: same loss, same gradients, same Adam step as autograd on the real RankNet."""

from __future__ import annotations

import copy

import pytest
import torch

from forkcast_retrain.fastpath import autograd_loss_and_grads, fast_forward, fast_loss_and_grads
from forkcast_retrain.model import RankNet, build_model, build_optimizer

# float32, norm-wise: ||fast - autograd|| / ||autograd||. The two compute the same sums in another order
# (through W2·W1), so they differ by float32 rounding, ~1e-7 relative; 1e-5 leaves room without hiding a
# wrong term (a missing bias term or mask gives errors of order 1e-2..1).
GRAD_RTOL = 1e-5


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def _batch(seed: int, rows: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 40, generator=gen) * scale
    y = (torch.rand(rows, generator=gen) < 0.5).float()
    return x, y


def _off_kink(model: RankNet, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop rows with a pre-ReLU value within float32 rounding of 0.

    There ReLU's derivative jumps, and the two float32 computations (through W2·W1 or layer by layer) round z
    differently by ~1e-6, so a row with |z| ~ 1e-7 can land on either side: both results are right to float32
    precision, but the gradients then differ by that row's whole contribution (we saw 2.6e-3 relative at 300
    rows). The float64 test below covers every row, kinks included, at 1e-10.
    """
    with torch.no_grad():
        z = model.net[1](model.net[0](x))
    keep = (z.abs() > 1e-4 * z.abs().max()).all(dim=1)
    assert int(keep.sum()) >= 0.8 * len(x)  # a handful of rows at most are near a kink
    return x[keep], y[keep]


def _grads(model: RankNet) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize(
    ("seed", "rows", "scale"), [(0, 1024, 1.0), (1, 4096, 2.0), (2, 7, 1.0), (3, 300, 5.0)]
)
def test_loss_and_every_gradient_equal_autograd(seed: int, rows: int, scale: float) -> None:
    model = build_model(seed)
    x, y = _off_kink(model, *_batch(seed, rows, scale))
    ref_loss, ref_logits = autograd_loss_and_grads(model, x, y)
    ref = _grads(model)
    loss, logits = fast_loss_and_grads(model, x, y)
    fast = _grads(model)
    assert len(fast) == len(ref) == 6
    assert abs(float(loss) - float(ref_loss)) <= GRAD_RTOL * abs(float(ref_loss))
    assert _rel(logits, ref_logits) <= GRAD_RTOL
    for (name, _), g_fast, g_ref in zip(model.named_parameters(), fast, ref, strict=True):
        assert g_fast.shape == g_ref.shape, name
        assert _rel(g_fast, g_ref) <= GRAD_RTOL, name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float64_gradients_equal_autograd_on_every_row(seed: int) -> None:
    """In float64 rounding is ~1e-16, so no row is near enough a kink to flip: the algebra is exact."""
    model = build_model(seed).double()
    x, y = _batch(seed, 2048, 3.0)
    x, y = x.double(), y.double()
    ref_loss, _ = autograd_loss_and_grads(model, x, y)
    ref = _grads(model)
    loss, _ = fast_loss_and_grads(model, x, y)
    assert abs(float(loss) - float(ref_loss)) <= 1e-12
    for g_fast, g_ref in zip(_grads(model), ref, strict=True):
        assert _rel(g_fast, g_ref) <= 1e-10


def test_gradients_equal_after_training_moved_the_weights() -> None:
    """Trained weights (many ReLUs off, correlated layers) are not the random init: check exactness there too."""
    model = build_model(5)
    opt = build_optimizer(model, 1e-2)
    for i in range(50):
        x, y = _batch(100 + i, 512, 1.0)
        fast_loss_and_grads(model, x, y)
        opt.step()
    x, y = _off_kink(model, *_batch(999, 2048, 1.0))
    autograd_loss_and_grads(model, x, y)
    ref = _grads(model)
    fast_loss_and_grads(model, x, y)
    for g_fast, g_ref in zip(_grads(model), ref, strict=True):
        assert _rel(g_fast, g_ref) <= GRAD_RTOL


def test_fast_forward_equals_the_module() -> None:
    model = build_model(3)
    x, _ = _batch(3, 2000, 2.0)
    with torch.no_grad():
        assert _rel(fast_forward(model, x), model(x)) <= GRAD_RTOL


def test_one_adam_step_gives_the_same_parameters() -> None:
    base = build_model(7)
    x, y = _off_kink(base, *_batch(7, 4096, 1.0))
    results = []
    for step in (autograd_loss_and_grads, fast_loss_and_grads):
        model = copy.deepcopy(base)
        opt = build_optimizer(model, 1e-3)
        step(model, x, y)
        opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for p_ref, p_fast in zip(*results, strict=True):
        assert _rel(p_fast, p_ref) <= GRAD_RTOL


def test_loss_curves_agree_over_hundreds_of_steps() -> None:
    """300 Adam steps each way from the same state, on the same batches.

    Adam divides by sqrt(v): for a gradient component near zero, float rounding of the order of 1e-7 can flip
    its sign and move the weight by ~lr in the other direction. So parameters may drift apart by up to about
    lr·steps (here 1e-3 · 300 = 0.3 per weight in the worst case; in practice far less), while the loss curves
    stay together: we require every step's loss to agree within 1e-3 relative and the final losses within 1e-3.
    """
    steps, lr = 300, 1e-3
    torch.manual_seed(0)
    teacher = torch.randn(40)
    curves = []
    finals = []
    for step in (autograd_loss_and_grads, fast_loss_and_grads):
        model = build_model(11)
        opt = build_optimizer(model, lr)
        gen = torch.Generator().manual_seed(11)
        curve = []
        for _ in range(steps):
            x = torch.randn(512, 40, generator=gen)
            y = (torch.sigmoid(x @ teacher) > torch.rand(512, generator=gen)).float()
            loss, _ = step(model, x, y)
            opt.step()
            curve.append(float(loss))
        curves.append(torch.tensor(curve))
        finals.append([p.detach().clone() for p in model.parameters()])
    ref, fast = curves
    assert float(((fast - ref).abs() / ref).max()) <= 1e-3
    assert float(ref[-1]) < 0.5 * float(ref[0])  # the run really learned something
    for p_ref, p_fast in zip(*finals, strict=True):
        assert float((p_fast - p_ref).abs().max()) <= lr * steps

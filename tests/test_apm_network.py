import pytest
import torch

from harness.methods.configs import ApmConfig
from harness.errors import HarnessError
from harness.methods.apm import NonFiniteLoss, apm_transform, run_ttt
from harness.models.apm import ApmNet, sincos_2d

TINY = ApmConfig(image_size=64, patch_size=8, hidden=(256, 256, 128))


@pytest.mark.parametrize("width", [512, 768, 1024])
def test_output_width_follows_the_teacher(width):
    net = ApmNet(ApmConfig(image_size=56), width)  # 4x4 grid, spec-size MLP
    x = torch.randn(2, 3, 56, 56)
    assert net(x).shape == (2, width)
    assert net.features(x).shape == (2, 16, width)
    emb, rgb = net.forward_with_rgb(x)
    assert emb.shape == (2, width) and rgb.shape == (2, 16, 3)


def test_parameter_count_at_the_spec_default_size():
    d, g = 768, (448 // 14) ** 2
    net = ApmNet(ApmConfig(), d)
    mlp = (2 * g * 4096 + 4096) + (4096 * 2048 + 2048) + (2048 * 1024 + 1024) + (1024 * d + d)
    attention = 4 * d * d + 4 * d + d  # in/out projections with biases, plus the learned query
    trigger = 3 * 14 * 14 + 1
    assert net.num_parameters() == mlp + attention + trigger
    assert 21.5e6 < net.num_parameters() < 22.5e6  # "about 22 M parameters at D = 768"
    assert net.num_parameters(include_rgb=True) > net.num_parameters()


def test_query_code_is_two_halves_x_then_y():
    code = sincos_2d(16, 4)  # 4x4 grid, row-major
    assert code.shape == (16, 16)
    assert torch.equal(code[1, :8], code[5, :8])  # same x, different y: first half equal
    assert torch.equal(code[4, 8:], code[5, 8:])  # same y, different x: second half equal
    assert not torch.equal(code[1, 8:], code[5, 8:])


def test_chunked_locations_give_the_same_values_and_gradients():
    whole = ApmNet(ApmConfig(image_size=64, patch_size=8, hidden=(64, 32), use_patch=True), 32)
    chunked = ApmNet(ApmConfig(image_size=64, patch_size=8, hidden=(64, 32), use_patch=True, chunk_size=10), 32)
    chunked.load_state_dict(whole.state_dict())
    x = torch.randn(1, 3, 64, 64)
    a, b = whole(x), chunked(x)
    torch.testing.assert_close(a, b)
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(whole.first.weight.grad, chunked.first.weight.grad)


def test_reset_draws_every_parameter_from_the_seeded_normal():
    net = ApmNet(TINY, 64)
    net.reset_parameters(7)
    first = [p.detach().clone() for p in net.parameters()]
    net.reset_parameters(7)
    assert all(torch.equal(a, b) for a, b in zip(first, net.parameters()))
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert abs(flat.std().item() - 0.01) < 1e-3 and abs(flat.mean().item()) < 1e-3
    net.reset_parameters(8)
    assert not torch.equal(first[0], next(net.parameters()))


def test_a_sample_starts_from_the_same_weights_on_every_device():
    """Draws come from a CPU generator whatever the network's device (a CUDA generator draws another
    stream): here a network on the meta device gets exactly the CPU network's first weights."""
    from harness.models.apm import draw_parameters

    cpu = ApmNet(TINY, 64)
    cpu.reset_parameters(11)
    elsewhere = draw_parameters(ApmNet(TINY, 64).to("meta"), 11)
    assert all(d.device.type == "cpu" and torch.equal(d, p) for d, p in zip(elsewhere, cpu.parameters()))


def test_ttt_drives_the_loss_down_100x_in_250_steps(teacher):
    from tasks.synthetic import SyntheticTask

    task = SyntheticTask()
    image = task.load(task.samples()[5]).image
    target = teacher.encode_images(teacher.preprocess(image)[None])[0]
    net = ApmNet(ApmConfig(image_size=64, patch_size=8, hidden=(256, 256, 128), steps=250, lr=1e-4), 64)
    result = run_ttt(net, apm_transform(64)(image), target, seed=1)
    assert len(result.losses) == 250
    assert result.losses[-1] * 100 <= result.losses[0]


def test_rgb_head_joins_the_loss_when_weighted(teacher):
    net = ApmNet(ApmConfig(image_size=32, patch_size=8, hidden=(32,), steps=3, rgb_weight=1.0), 64)
    x, target = torch.randn(3, 32, 32), torch.zeros(64)
    with_rgb = run_ttt(net, x, target, seed=0)
    without = run_ttt(ApmNet(ApmConfig(image_size=32, patch_size=8, hidden=(32,), steps=3), 64), x, target, 0)
    assert with_rgb.losses[0] > without.losses[0]  # the colour error is added on top


def test_non_finite_loss_is_reported_with_its_step():
    net = ApmNet(ApmConfig(image_size=32, patch_size=8, hidden=(32,), steps=4), 16)
    target = torch.zeros(16)
    target[3] = float("nan")
    with pytest.raises(NonFiniteLoss) as info:
        run_ttt(net, torch.randn(3, 32, 32), target, seed=0)
    assert info.value.step == 0


def test_bad_geometry_is_a_clear_error():
    with pytest.raises(HarnessError, match="apm.patch_size"):
        ApmNet(ApmConfig(image_size=50, patch_size=14), 64)
    with pytest.raises(HarnessError, match="apm.heads"):
        ApmNet(ApmConfig(image_size=56, heads=5), 64)

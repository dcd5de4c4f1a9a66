"""The stylizer's CUDA graphs (fastns.stylize.graphs): the same images as the eager forward.

The CUDA tests are skipped without a CUDA device; benchmarks/gpu_suite.sh runs them on a lent GPU.
"""

import pytest
import torch
from torch import nn

from fastns.stylize import Stylizer
from fastns.stylize.graphs import GraphedForward
from fastns.transformer import DEFAULT_BORDER, CondInstanceNorm2d, TransformerNet

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _net(num_styles: int = 1) -> TransformerNet:
    torch.manual_seed(0)
    net = TransformerNet(width=0.5, num_styles=num_styles).eval()
    with torch.no_grad():  # non-trivial γ, β so that the styles differ
        for m in net.modules():
            if isinstance(m, nn.InstanceNorm2d | CondInstanceNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net


@needs_cuda
@pytest.mark.parametrize("size", [(64, 64), (256, 256), (180, 321)])
def test_graphed_stylizer_matches_eager_and_plain(size):
    net = _net()
    graphed = Stylizer(net, device="cuda")
    eager = Stylizer(net, device="cuda", cuda_graphs=False)
    assert isinstance(graphed._forward, GraphedForward)
    gen = torch.Generator().manual_seed(1)
    images = [torch.rand(2, 3, *size, generator=gen).cuda() for _ in range(3)]
    outs = [graphed.stylize(x) for x in images]  # the second and third are replays
    assert len(graphed._forward.graphs) == 1
    with torch.no_grad():
        plain = [net.cuda()(x, DEFAULT_BORDER) for x in images]
    for x, out, ref in zip(images, outs, plain, strict=True):
        assert (out - eager.stylize(x)).abs().max() < 1e-3
        assert (out - ref).abs().mean() < 1 / 255  # fp16 against the fp32 network
    # Each call returned its own tensor: the third replay did not overwrite the second's output.
    assert (outs[1] - outs[2]).abs().max() > 0.01


@needs_cuda
def test_a_shape_is_captured_on_its_second_use_and_few_are_kept():
    stylizer = Stylizer(_net(), device="cuda")
    graphs = stylizer._forward
    for side in (64, 72, 80, 88, 96, 104):  # a folder of photos of all sizes: nothing captured
        stylizer.stylize(torch.rand(1, 3, side, side).cuda())
    assert len(graphs.graphs) == 0
    for side in (64, 72, 80, 88, 96, 104):
        stylizer.stylize(torch.rand(1, 3, side, side).cuda())
    assert len(graphs.graphs) == graphs.max_graphs


@needs_cuda
def test_graphed_blends_follow_the_style_weights():
    net = _net(num_styles=2)
    graphed = Stylizer(net, device="cuda")
    eager = Stylizer(net, device="cuda", cuda_graphs=False)
    x = torch.rand(1, 3, 96, 128).cuda()
    for style in [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.3, 0.7]]:  # captured on the second call
        assert (graphed.stylize(x, style=style) - eager.stylize(x, style=style)).abs().max() < 1e-3
    assert len(graphed._forward.graphs) == 1


def test_cuda_graphs_asked_for_on_the_cpu_run_the_network_as_it_is():
    net = _net()
    x = torch.rand(1, 3, 40, 56)
    forced = Stylizer(net, device="cpu", precision="fp32", cuda_graphs=True)
    plain = Stylizer(net, device="cpu", precision="fp32", cuda_graphs=False)
    assert isinstance(forced._forward, GraphedForward)
    for _ in range(3):  # past the second use, where CUDA would capture
        assert torch.equal(forced.stylize(x), plain.stylize(x))
    assert not forced._forward.graphs

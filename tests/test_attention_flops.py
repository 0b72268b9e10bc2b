"""adc's FLOPs of attention models are true: checked against counts adc did not make.

``adc.analysis.counting.count`` is the yardstick of every figure adc prints;
in eval mode without gradients ``FlopCounterMode`` misses the fused attention
kernels (ViT-B/16: 22.5 GFLOPs instead of 35.1). Every torchvision model with
an attention module is counted here against the MACs torchvision publishes in
its weights' metadata (``meta["_ops"]``, GMACs to three decimals, at the
weights' crop size): the small ones on the CPU, the large ones on the
``meta`` device (nothing computed); small transformers against hand-written
formulas.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torchvision
from torch import nn

from adc.analysis.cost import cost, count
from adc.analysis.counting import UncountedOperator
from adc.analysis.graph import analyze
from torchvision_cases import ALL_MODELS, build, example


CPU_GMACS = 6.0
"""Models up to this many GMACs are counted on the CPU, the code path a user runs (attention takes other
kernels there); larger ones on the meta device."""


def _model(name: str, device: str = "meta") -> tuple[nn.Module, torch.Tensor, float]:
    """The model and an input of its default weights' crop size on ``device``, and the published GMACs."""
    weights = torchvision.models.get_model_weights(name).DEFAULT
    size = weights.transforms().crop_size[0]
    options = {"image_size": size} if name.startswith("vit_") else {}
    with torch.device(device):
        model = torchvision.models.get_model(name, **options)
        x = torch.zeros(1, 3, size, size)
    return model, x, float(weights.meta["_ops"])


def _has_attention(name: str) -> bool:
    """Whether the module defining the model's builder uses an attention layer (read, not built: RegNets
    cannot be built on the meta device)."""
    return "Attention" in inspect.getsource(inspect.getmodule(torchvision.models.get_model_builder(name)))


ATTENTION_MODELS = [n for n in ALL_MODELS if _has_attention(n)]


def test_the_attention_models_are_found() -> None:
    assert {"vit_b_16", "vit_h_14", "swin_t", "swin_v2_b", "maxvit_t"} <= set(ATTENTION_MODELS)


@pytest.mark.parametrize("name", ATTENTION_MODELS)
def test_attention_model_flops_match_torchvisions_published_count(name: str) -> None:
    published = float(torchvision.models.get_model_weights(name).DEFAULT.meta["_ops"])
    model, x, published_gmacs = _model(name, "cpu" if published <= CPU_GMACS else "meta")
    macs = count(model, x).macs
    # Published to three decimals of a GMAC.
    assert abs(macs / 1e9 - published_gmacs) <= 0.0005 + 1e-6, f"{name}: {macs / 1e9:.4f} GMACs, published {published_gmacs}"


def test_vit_on_the_cpu_counts_its_attention_products() -> None:
    """On the CPU, attention runs ``_scaled_dot_product_flash_attention_for_cpu`` (no formula in PyTorch)."""
    model = torchvision.models.vit_b_32().eval()
    assert count(model, torch.zeros(1, 3, 224, 224)).macs == count(*_model("vit_b_32")[:2]).macs
    assert torch.backends.mha.get_fastpath_enabled()  # the fast path is switched back on afterwards


def _vit_macs(tokens: int, width: int, mlp: int, layers: int, patch_macs: int, classes: int) -> int:
    """One ViT's MACs by hand: patch projection, per block q/k/v/out projections, the two attention
    products and the MLP, then the head."""
    block = 4 * tokens * width * width + 2 * tokens * tokens * width + 2 * tokens * width * mlp
    return patch_macs + layers * block + width * classes


def test_analysed_vit_cost_is_the_hand_count() -> None:
    """What ``adc profile`` / ``adc search`` report for a ViT, unpruned and pruned, against a formula."""
    model, x = build("vit_b_32"), example("vit_b_32")  # 64 x 64: 4 patches and the class token
    tokens, width = 5, 768
    patch = width * 3 * 32 * 32 * 4
    assert count(model, x).macs == _vit_macs(tokens, width, 3072, 12, patch, 10)
    graph = analyze(model, x)
    assert cost(graph, {}).macs == _vit_macs(tokens, width, 3072, 12, patch, 10)
    # Every MLP hidden width halved (its units): the formula with 1536.
    assert cost(graph, {u.name: 0.5 for u in graph.units}).macs == _vit_macs(tokens, width, 1536, 12, patch, 10)


def test_transformer_encoder_fast_path_is_counted() -> None:
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    tokens = 10
    per_layer = 4 * tokens * 64 * 64 + 2 * tokens * tokens * 64 + 2 * tokens * 64 * 128
    assert count(encoder, torch.randn(3, tokens, 64)).macs == 2 * per_layer


class _FusedAttention(nn.Module):
    """Calls the fused attention kernel itself: no switch turns it into counted operators."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mha
        return torch._native_multi_head_attention(x, x, x, 16, 2, m.in_proj_weight, m.in_proj_bias,
                                                  m.out_proj.weight, m.out_proj.bias, need_weights=False)[0]


def test_an_operator_without_a_formula_is_refused_not_undercounted() -> None:
    with pytest.raises(UncountedOperator) as excinfo:
        count(_FusedAttention(), torch.randn(1, 5, 16))
    message = str(excinfo.value)
    assert "\n" not in message and "aten._native_multi_head_attention" in message and "_FusedAttention" in message


def test_vector_products_are_counted() -> None:
    class Vectors(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w, self.a = nn.Parameter(torch.randn(8)), nn.Parameter(torch.randn(5, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x @ self.w).sum() + torch.dot(x[0], self.w) + (self.a @ x[0]).sum()

    # Batch 2: mv 2 x 8, dot 8, mv 5 x 8 -> 64 MACs, 32 per sample.
    assert count(Vectors(), torch.randn(2, 8)).macs == 32

"""The one synthesize -> gate step (synthesis/pipeline.py) that the trainers, generator training, its monitor and the
offline export share."""

import pytest
import torch
from torch import nn

from nnunet_freetumor.synthesis.masks import soft_masks
from nnunet_freetumor.synthesis.pipeline import judge, synthesize_and_gate

SPACING = (2.0, 1.0, 1.0)
TUMOR = (2,)


class DarkIsTumor(nn.Module):
    """Logits (background, organ, tumor): tumor where the input is below 0."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 0.5 * torch.ones_like(x), (x < 0).float()], 1)


def boxes(n=3, shape=(8, 12, 12)):
    x = torch.full((n, 1, *shape), 1.0)
    organ = torch.ones_like(x, dtype=torch.bool)
    mask = torch.zeros_like(organ)
    mask[..., 2:6, 3:9, 3:9] = True
    return x, mask, organ


def darken(by: list[float]):
    """A synthesizer that subtracts ``by[i]`` inside the soft mask of sample i."""

    def synthesize(x, soft, organ_index):
        return x - torch.tensor(by).view(-1, 1, 1, 1, 1) * soft

    return synthesize


def test_the_step_softens_the_masks_synthesizes_and_gates_each_sample():
    x, mask, organ = boxes()
    g = synthesize_and_gate(
        darken([0.0, 5.0, 1.2]),
        x,
        mask,
        organ,
        torch.zeros(3, dtype=torch.long),
        [1.0, 1.0, 1.0],
        SPACING,
        DarkIsTumor(),
        tumor_labels=TUMOR,
        threshold=0.7,
    )
    torch.testing.assert_close(g.soft, soft_masks(mask, organ, [1.0] * 3, SPACING))
    assert g.p[0] == 0 and g.p[1] == 1.0  # no change: S sees no tumor; a dark tumor: all of it
    assert 0 < g.p[2] < 0.7  # a faint one: only its core goes below 0
    assert g.accept.tolist() == [False, True, False]
    assert g.logits.shape == (3, 3, 8, 12, 12)


def test_a_non_finite_synthetic_tumor_is_rejected_whatever_s_says():
    x, mask, organ = boxes(2)

    def broken(x, soft, organ_index):
        out = x - 5.0 * soft
        out[1, 0, 4, 6, 6] = float("nan")
        return out

    g = synthesize_and_gate(
        broken, x, mask, organ, torch.zeros(2), [1.0, 1.0], SPACING, DarkIsTumor(), tumor_labels=TUMOR, threshold=0.7
    )
    assert g.finite.tolist() == [True, False]
    assert g.accept.tolist() == [True, False]
    assert bool(judge(torch.zeros(1, 3, 2, 2, 2), torch.ones(1, 1, 2, 2, 2, dtype=torch.bool), TUMOR, 0.0)[1][0])


def test_without_a_segmenter_every_finite_tumor_is_accepted_and_p_is_undefined():
    x, mask, organ = boxes(2)
    g = synthesize_and_gate(darken([0.0, 5.0]), x, mask, organ, torch.zeros(2), [1.0, 1.0], SPACING)
    assert g.logits is None and torch.isnan(g.p).all()
    assert g.accept.tolist() == [True, True]


def test_the_gate_can_judge_the_boxes_in_their_context():
    """A context (e.g. the whole patch) changes what S sees: here it hides the tumor, so the gate rejects it."""
    x, mask, organ = boxes(1)
    seen = []

    def bright_patch(x_hat):
        seen.append(x_hat)
        return torch.ones(1, 1, 16, 16, 16), torch.ones(1, 1, 16, 16, 16, dtype=torch.bool)

    kw = {"tumor_labels": TUMOR, "threshold": 0.7}
    args = (darken([5.0]), x, mask, organ, torch.zeros(1), [1.0], SPACING, DarkIsTumor())
    assert bool(synthesize_and_gate(*args, **kw).accept[0])
    g = synthesize_and_gate(*args, context=bright_patch, **kw)
    assert not bool(g.accept[0]) and g.p[0] == 0
    assert len(seen) == 1 and torch.equal(seen[0], g.x_hat)


def test_s_logits_carry_gradients_to_the_synthesizer_and_p_does_not():
    x, mask, organ = boxes(1)
    strength = torch.tensor(2.0, requires_grad=True)

    def learned(x, soft, organ_index):
        return x - strength * soft

    class Smooth(nn.Module):  # a differentiable S: tumor logit grows as the input darkens
        def forward(self, x):
            return torch.cat([torch.zeros_like(x), torch.zeros_like(x), -x], 1)

    g = synthesize_and_gate(
        learned, x, mask, organ, torch.zeros(1), [1.0], SPACING, Smooth(), tumor_labels=TUMOR, threshold=0.5
    )
    assert not g.p.requires_grad and not g.accept.requires_grad
    g.logits[:, 2][mask[:, 0]].sum().backward()
    assert strength.grad is not None and float(strength.grad) > 0


@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_judge_is_eq_4_and_5(threshold):
    logits = torch.zeros(1, 3, 1, 1, 4)
    logits[0, 2, 0, 0, :2] = 1.0  # half the mask is tumor
    p, accept = judge(logits, torch.ones(1, 1, 1, 1, 4, dtype=torch.bool), TUMOR, threshold)
    assert float(p[0]) == pytest.approx(0.5)
    assert bool(accept[0]) == (threshold <= 0.5)

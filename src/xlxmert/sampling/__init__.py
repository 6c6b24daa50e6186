"""Samplers (text → visual ids): TL→BR, Random, Easy-First, Mask-Predict-K; caption Gibbs sampling.

Samplers are schedulers in the diffusers sense: they decide which cells are (re)masked and written
at each step and never see the model, which they reach through a ``predict`` callable.
"""

from xlxmert.sampling.caption import CaptionSampler, CaptionSamplerOutput
from xlxmert.sampling.visual import (
    SAMPLERS,
    EasyFirstSampler,
    FeatureSamplerOutput,
    MaskPredictSampler,
    RandomSampler,
    SamplerConfig,
    SamplerOutput,
    TopLeftToBottomRightSampler,
    VisualSampler,
    choose_ids,
    get_sampler,
)

__all__ = [
    "SAMPLERS",
    "CaptionSampler",
    "CaptionSamplerOutput",
    "EasyFirstSampler",
    "FeatureSamplerOutput",
    "MaskPredictSampler",
    "RandomSampler",
    "SamplerConfig",
    "SamplerOutput",
    "TopLeftToBottomRightSampler",
    "VisualSampler",
    "choose_ids",
    "get_sampler",
]

"""Samplers (text → visual ids): TL→BR, Random, Easy-First, Mask-Predict-K; caption decoders
(mask-predict over the words, the paper's Gibbs sampling).

Samplers are schedulers in the diffusers sense: they decide which cells are (re)masked and written
at each step and never see the model, which they reach through a ``predict`` callable.
"""

from xlxmert.sampling.caption import (
    CaptionDecoderOutput,
    CaptionSampler,
    CaptionSamplerOutput,
    CaptionTokens,
    MaskPredictCaptionDecoder,
    caption_scores,
)
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
    "CaptionDecoderOutput",
    "CaptionSampler",
    "CaptionSamplerOutput",
    "CaptionTokens",
    "EasyFirstSampler",
    "FeatureSamplerOutput",
    "MaskPredictCaptionDecoder",
    "MaskPredictSampler",
    "RandomSampler",
    "SamplerConfig",
    "SamplerOutput",
    "TopLeftToBottomRightSampler",
    "VisualSampler",
    "caption_scores",
    "choose_ids",
    "get_sampler",
]

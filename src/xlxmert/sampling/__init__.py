"""Samplers (text → visual ids): TL→BR, Random, Easy-First, Mask-Predict-K; caption Gibbs sampling."""

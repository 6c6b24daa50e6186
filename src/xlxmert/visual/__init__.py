"""The visual side: grid features (backbone + RoI pooling), the feature store, the visual vocabulary."""

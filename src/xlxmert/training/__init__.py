"""Training loops: backbone, generator (GAN), transformer pretraining, fine-tuning."""

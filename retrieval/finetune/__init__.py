"""Fine-tuning the CLIP model on a catalog's own photos and words: pairs, loss, held-out metrics, the model folder."""

"""Publishing a trained model: the strict loader, the model card and the Hub upload."""

"""What keeps the model learning: the background adapter trainer, scheduled rebuilds, the
model version registry and training from the store, and demo data."""

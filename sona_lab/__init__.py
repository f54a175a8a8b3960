"""SONA's host-side research code: loaders from files, the model store, training with progress
and timings, the experiment runner and its records and plots, notebook helpers. I/O lives here
(and in `service/`), never in the engine (`sona_jax/`)."""

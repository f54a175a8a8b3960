"""The served model versions: the engine behind its lock (`runtime`), micro-batchers and
admission, profiles, candidates, caches, the catalogue and tables kept current, program sets
(saved, compiled in a child), threads and the collector."""

"""Live A/B experiments: sticky assignment, statistics and the report the API answers.
(Offline searches over settings are `sona_lab` and `sona experiment`.)"""

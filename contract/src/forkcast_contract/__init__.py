"""The forkcast contract: what every part of the platform must agree on, defined once.

Services, pipelines and tools import these names instead of restating them, so that a change of layout
(a column, a feature order, a key name) is one edit that every part sees.
"""

"""The Ray shells: one named actor per core in ``actors/``, wired by ``cluster.bus``."""

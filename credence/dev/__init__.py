"""A federation on one machine: synthetic records, ``credence dev``, ``make demo``."""

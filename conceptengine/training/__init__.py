"""Training loops (SAM 3, the verifiers) and their Ray Train launch; loop.py holds what every loop shares."""

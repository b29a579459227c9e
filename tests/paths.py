"""Where the repository and its shipped sample lie, for the tests."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"

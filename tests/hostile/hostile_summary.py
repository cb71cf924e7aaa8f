"""Lines the hostile tests add to pytest's terminal summary (corpus size, counts, kill outcomes)."""

SUMMARY: list[str] = []

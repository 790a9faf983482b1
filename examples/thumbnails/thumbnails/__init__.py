"""An example application: its tasks live in `thumbnails.tasks` (CONVEYOR_TASKS names it)."""

"""The `loopstack` command."""

"""Execution: engines that run admitted requests (the one-shot batch engine today)."""

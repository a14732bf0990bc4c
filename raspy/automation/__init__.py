"""Cron jobs and scenarios, and the durable store that keeps their settings."""

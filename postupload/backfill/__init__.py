"""Backfill: asset listings turned into notifications, and the resumable runner."""

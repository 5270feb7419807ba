"""Ingest: sources into the store, exactly once.

sources (files, globs, stdin, compressed; chunk readers; the rejects file), batch
(whole sources in micro-batches that commit with their positions), live (following
files and stdin: heartbeats, watermarks) and kafka (partitions).
"""

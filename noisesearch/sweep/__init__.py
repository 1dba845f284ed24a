"""Sweeps: YAML configs, resumable JSONL runs on one machine or a Ray cluster, and reports."""

"""Load generators and payloads shared by benchmarks/run.py."""

"""The lab service: the engine and the run store behind an authenticated HTTP API (`python -m ptft_core serve`)."""

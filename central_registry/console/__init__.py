"""The operator's console: a small HTTPS web app beside the registry (members, agencies, log)."""

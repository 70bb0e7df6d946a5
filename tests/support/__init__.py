"""Test-side tools: a test Apple CA, OIDC test tokens, running servers. Shared with bench/."""

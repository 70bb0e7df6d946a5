"""Outbound events: what the business's systems are told, as a feed and as signed webhooks."""

"""The support console: server-rendered pages for the support desk under /console."""
